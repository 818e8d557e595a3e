//! armor-refresh: roll AppArmor/KubeArmor profiles out to running pods gradually and safely.
//!
//! Functional core (no I/O): [`policy`] validation, [`compliance`], [`select`]ion,
//! [`schedule`] (windows), [`plan`] (batches) and the [`run`] state machine.
//! See ARCHITECTURE.md for the map.

pub mod api;
pub mod clock;
pub mod cluster;
pub mod compliance;
pub mod controller;
pub mod crdcheck;
pub mod crdgen;
pub mod memory;
pub mod metrics;
pub mod ops;
pub mod plan;
pub mod pod;
pub mod policy;
pub mod report;
pub mod retention;
pub mod run;
pub mod schedule;
pub mod select;
pub mod webhook;
pub mod yaml;
