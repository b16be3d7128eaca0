//! FILE workloads: recorded or hand-written requests, one JSON object a line (JSONL).
//!
//! ```json
//! {"t": 12.5, "upstream": "anthropic", "path": "/v1/messages",
//!  "headers": {"x-api-key": "sk-…", "anthropic-version": "2023-06-01"},
//!  "body": {"model": "claude-sonnet-4-6", "max_tokens": 300, "messages": […]},
//!  "context_first_body": {…}}
//! ```
//!
//! - `t`: seconds from the start of the replay (a finite number ≥ 0); lines need not be in
//!   order, requests are sorted by `t` (stably: equal `t` keep file order and go concurrently).
//! - `upstream`: `anthropic`, `openai`, `gemini`, `deepseek` or `vllm`; `path` is the path under
//!   that upstream's mount, query included.
//! - `headers`: optional, names to string values, sent as given and in that order.
//! - `body`: the JSON body, sent as compact JSON with its keys in file order.
//! - `context_first_body`: optional, the body with the question after the context, for the
//!   oracle; lines without one use `body` there. An upstream none of whose lines has one gets
//!   no context-first variant.
//!
//! Blank lines are skipped. The lines of each upstream form one workload, named after the file
//! (its stem), in the order the upstreams first appear; its model is the first request's `model`
//! field, else the `models/{m}:` in its path (Gemini). Errors read `{file}: line {n}: {what}`.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Provider, Request, Workload};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    t: f64,
    upstream: String,
    path: String,
    #[serde(default)]
    headers: Map<String, Value>,
    body: Value,
    #[serde(default)]
    context_first_body: Option<Value>,
}

/// The requests of one upstream while the file is read.
struct Group {
    provider: Provider,
    model: String,
    /// Each request with its context-first body, if the line had one.
    requests: Vec<(Request, Option<Value>)>,
}

pub fn load(path: &Path) -> Result<Vec<Workload>, String> {
    let text = std::fs::read_to_string(path).map_err(|err| format!("{}: {err}", path.display()))?;
    let name = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    parse(&text, &name).map_err(|err| format!("{}: {err}", path.display()))
}

/// Errors come back as `line {n}: {message}`.
fn parse(text: &str, name: &str) -> Result<Vec<Workload>, String> {
    let mut groups: Vec<Group> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let at = |err: String| format!("line {}: {err}", i + 1);
        let line: Line = serde_json::from_str(raw).map_err(|err| at(err.to_string()))?;
        let (provider, request, context_first) = request(line).map_err(at)?;
        match groups.iter_mut().find(|group| group.provider == provider) {
            Some(group) => group.requests.push((request, context_first)),
            None => {
                let model = model_of(&request).ok_or_else(|| {
                    at(
                        "no model: neither a \"model\" in the body nor models/{m}: in the path"
                            .to_owned(),
                    )
                })?;
                groups.push(Group {
                    provider,
                    model,
                    requests: vec![(request, context_first)],
                });
            }
        }
    }
    if groups.is_empty() {
        return Err("no requests".to_owned());
    }
    Ok(groups
        .into_iter()
        .map(|group| workload(name, group))
        .collect())
}

fn request(line: Line) -> Result<(Provider, Request, Option<Value>), String> {
    if !line.t.is_finite() || line.t < 0.0 {
        return Err(format!("t must be a finite number >= 0, not {}", line.t));
    }
    let provider = Provider::from_upstream(&line.upstream).ok_or_else(|| {
        format!(
            "unknown upstream {:?} (anthropic, openai, gemini, deepseek, vllm)",
            line.upstream
        )
    })?;
    let headers = line
        .headers
        .into_iter()
        .map(|(name, value)| match value {
            Value::String(value) => Ok((name, value)),
            other => Err(format!("header {name:?} must be a string, not {other}")),
        })
        .collect::<Result<Vec<_>, String>>()?;
    let request = Request {
        t: line.t,
        upstream: line.upstream,
        path: line.path,
        headers,
        body: line.body,
    };
    Ok((provider, request, line.context_first_body))
}

fn model_of(request: &Request) -> Option<String> {
    if let Some(model) = request.body.get("model").and_then(Value::as_str) {
        return Some(model.to_owned());
    }
    let (_, rest) = request.path.split_once("models/")?;
    let (model, _) = rest.split_once(':')?;
    Some(model.to_owned())
}

fn workload(name: &str, mut group: Group) -> Workload {
    group.requests.sort_by(|a, b| a.0.t.total_cmp(&b.0.t));
    let has_context_first = group.requests.iter().any(|(_, cf)| cf.is_some());
    let context_first = has_context_first.then(|| {
        group
            .requests
            .iter()
            .map(|(request, body)| Request {
                body: body.clone().unwrap_or_else(|| request.body.clone()),
                ..request.clone()
            })
            .collect()
    });
    Workload {
        name: name.to_owned(),
        provider: group.provider,
        model: group.model,
        requests: group.requests.into_iter().map(|(r, _)| r).collect(),
        context_first,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const FILE: &str = r#"
{"t": 2, "upstream": "anthropic", "path": "/v1/messages", "headers": {"x-api-key": "k", "anthropic-version": "2023-06-01"}, "body": {"model": "claude-sonnet-4-6", "max_tokens": 10, "messages": [{"role": "user", "content": "q\n\ndoc"}]}, "context_first_body": {"model": "claude-sonnet-4-6", "max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "text", "text": "doc\n\n"}, {"type": "text", "text": "q"}]}]}}
{"t": 0.5, "upstream": "gemini", "path": "/v1beta/models/gemini-2.5-flash:generateContent", "body": {"contents": []}}

{"t": 1, "upstream": "anthropic", "path": "/v1/messages", "body": {"model": "claude-sonnet-4-6", "z": 1, "a": 2}}
"#;

    #[test]
    fn groups_by_upstream_and_sorts_by_t() {
        let workloads = parse(FILE, "trace").unwrap();
        let [anthropic, gemini] = workloads.as_slice() else {
            panic!("two upstreams")
        };
        assert_eq!(anthropic.name, "trace");
        assert_eq!(anthropic.provider, Provider::Anthropic);
        assert_eq!(anthropic.model, "claude-sonnet-4-6");
        assert_eq!(
            anthropic.requests.iter().map(|r| r.t).collect::<Vec<_>>(),
            [1.0, 2.0]
        );
        // Key order survives.
        assert_eq!(
            anthropic.requests[0].body.to_string(),
            r#"{"model":"claude-sonnet-4-6","z":1,"a":2}"#
        );
        assert_eq!(
            anthropic.requests[1].headers,
            [
                ("x-api-key".to_owned(), "k".to_owned()),
                ("anthropic-version".to_owned(), "2023-06-01".to_owned())
            ]
        );
        let context_first = anthropic.context_first.as_ref().unwrap();
        assert_eq!(context_first[0].body, anthropic.requests[0].body);
        assert_eq!(
            context_first[1].body["messages"][0]["content"][0]["text"],
            json!("doc\n\n")
        );
        assert_eq!(gemini.model, "gemini-2.5-flash");
        assert!(gemini.context_first.is_none());
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (r#"{"t": 1}"#, "line 1: missing field"),
            ("\n{}", "line 2: missing field"),
            (
                r#"{"t": -1, "upstream": "openai", "path": "/", "body": {}}"#,
                "line 1: t must be",
            ),
            (
                r#"{"t": 1, "upstream": "azure", "path": "/", "body": {}}"#,
                "line 1: unknown upstream \"azure\"",
            ),
            (
                r#"{"t": 1, "upstream": "openai", "path": "/", "headers": {"a": 1}, "body": {}}"#,
                "line 1: header \"a\" must be a string",
            ),
            (
                r#"{"t": 1, "upstream": "openai", "path": "/", "body": {}}"#,
                "line 1: no model",
            ),
            (
                r#"{"t": 1, "upstream": "openai", "path": "/", "body": {}, "extra": 1}"#,
                "line 1: unknown field `extra`",
            ),
            ("not json", "line 1: expected"),
            ("", "no requests"),
        ];
        for (text, expected) in cases {
            let err = parse(text, "x").unwrap_err();
            assert!(err.starts_with(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn load_names_the_workload_after_the_file() {
        let dir = std::env::temp_dir().join(format!("cachet-replay-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("my-trace.jsonl");
        std::fs::write(&path, FILE).unwrap();
        let workloads = load(&path).unwrap();
        assert!(workloads.iter().all(|w| w.name == "my-trace"));
        std::fs::write(&path, "{}").unwrap();
        let err = load(&path).unwrap_err();
        assert!(
            err.starts_with(&format!("{}: line 1: missing field", path.display())),
            "{err}"
        );
        let err = load(&dir.join("absent.jsonl")).unwrap_err();
        assert!(err.contains("absent.jsonl"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
