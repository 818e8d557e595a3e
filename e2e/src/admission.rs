//! An admission webhook server for the tests' own webhooks (KubeArmor's stand-in, the
//! faults webhook): TLS on 127.0.0.1 with a self-signed certificate made at start, each
//! AdmissionReview answered by a handler.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::Result;

/// A running server: its port, the CA to put in a webhook configuration, its task.
pub struct Server {
    pub port: u16,
    pub ca: String,
    pub task: tokio::task::JoinHandle<()>,
}

/// Serves `handler(path, body)` for every request; the path has no leading slash.
pub async fn serve<F, Fut>(handler: F) -> Result<Server>
where
    F: Fn(String, Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Value> + Send + 'static,
{
    let (key, ca) = armor_refresh::webhook::server::self_signed(
        &["localhost".into()],
        &["127.0.0.1".parse()?],
        Duration::from_secs(3600),
    )?;
    #[derive(Debug)]
    struct One(Arc<rustls::sign::CertifiedKey>);
    impl rustls::server::ResolvesServerCert for One {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
    }
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(One(Arc::new(key))));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, handler) = (acceptor.clone(), handler.clone());
            tokio::spawn(async move {
                let Ok(Ok(tls)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
                else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let handler = handler.clone();
                        async move {
                            let path = req.uri().path().trim_matches('/').to_string();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let out = handler(path, body).await;
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(out.to_string())))
                                    .expect("a response"),
                            )
                        }
                    },
                );
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service);
                let _ = tokio::time::timeout(Duration::from_secs(120), conn).await;
            });
        }
    });
    Ok(Server { port, ca, task })
}
