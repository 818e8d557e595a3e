//! YAML streams (several documents, empty ones skipped) read as JSON values, the form the
//! rest of the code and the API server's schema checks work on. Scalars resolve as
//! kubectl resolves them (YAML 1.1: `yes` and `on` are booleans), so `plan` reads a file
//! as `kubectl apply` would send it.
//!
//! The parser's default budget guards a small config file (a quarter of a million nodes);
//! a `kubectl get -A -o yaml` snapshot of a large cluster holds about a hundred per pod. So
//! the node and event budgets grow with the input: every node or event read takes at least
//! a byte of text, except those an alias replays, and those stay bounded by the defaults.
//! An alias bomb still ends in an error within a million events, not in exhausted memory.

/// A document of the stream (counted from 1, empty ones not counted) that did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocError {
    pub document: usize,
    pub error: String,
}

/// The non-empty documents of `text`, in order; the first that does not parse is an error.
pub fn documents(text: &str) -> Result<Vec<serde_json::Value>, DocError> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: 1_000_000 + text.len(),
            max_nodes: 250_000 + text.len(),
            max_documents: 1_024 + text.len() / 4,
            // The text is in memory already: its size is no reason to refuse it.
            max_reader_input_bytes: None,
            max_total_scalar_bytes: 64 * 1024 * 1024 + text.len(),
        },
    };
    let mut reader = text.as_bytes();
    serde_saphyr::read_with_options(&mut reader, options)
        .enumerate()
        .map(|(i, doc)| {
            doc.map_err(|e| DocError {
                document: i + 1,
                error: e.to_string(),
            })
        })
        .filter(|doc| !matches!(doc, Ok(serde_json::Value::Null)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_of_a_stream_skip_empty_ones_and_read_scalars_as_kubectl_does() {
        // kubectl reads YAML 1.1 (sigs.k8s.io/yaml's goyaml.v2, resolve.go): `yes` is a bool.
        let docs =
            documents("---\n# only a comment\n---\na: 1\nb: '10%'\nc: yes\n---\n---\n[1, true]\n")
                .unwrap();
        assert_eq!(
            docs,
            vec![json!({"a": 1, "b": "10%", "c": true}), json!([1, true])]
        );
        assert_eq!(documents("").unwrap(), Vec::<serde_json::Value>::new());
    }

    #[test]
    fn a_broken_document_is_named_by_its_position() {
        let e = documents("a: 1\n---\nb: [unclosed\n").unwrap_err();
        assert_eq!(e.document, 2, "{e:?}");
        assert!(!e.error.is_empty());
    }

    #[test]
    fn a_snapshot_larger_than_the_parsers_default_budget_is_read() {
        // 30,000 pods of 10 nodes each: beyond the default 250,000 nodes.
        let mut text = String::from("items:\n");
        for i in 0..30_000 {
            text.push_str(&format!(
                "- metadata: {{name: p{i}, namespace: ns, labels: {{app: web}}}}\n  spec: {{nodeName: n1}}\n"
            ));
        }
        let docs = documents(&text).unwrap();
        assert_eq!(docs[0]["items"].as_array().map(Vec::len), Some(30_000));
    }

    #[test]
    fn an_alias_bomb_is_an_error_not_exhausted_memory() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(documents(&text).is_err());
    }
}
