//! Anthropic Messages: where the question-after-context rewrite and the tool sort find things.
//! A user message's content is a string or content blocks (`text`, `image`, `document`, tool
//! blocks); a split string becomes two text blocks, so a breakpoint can sit between them.

use serde_json::{Map, Value};

use crate::config::RewriteConfig;
use crate::rewrite::{self, Applied, PartView, Plan};

pub fn questions(body: &mut Value, config: &RewriteConfig, applied: &mut Applied) {
    let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) else {
        return;
    };
    for message in messages {
        if message.get("role").and_then(Value::as_str) != Some("user") {
            continue;
        }
        if let Some(content) = message.get_mut("content") {
            edit_content(content, config, applied);
        }
    }
}

pub fn sort_tools(body: &mut Value) -> bool {
    let Some(tools) = body.get_mut("tools").and_then(Value::as_array_mut) else {
        return false;
    };
    rewrite::sort_by_name(tools, |tool| tool.get("name").and_then(Value::as_str))
}

fn edit_content(content: &mut Value, config: &RewriteConfig, applied: &mut Applied) {
    match content {
        Value::String(text) => {
            let whole = PartView::Text { text, plain: true };
            if let Some(Plan::Split(split)) = rewrite::plan(&[whole], config) {
                let pieces = split.take_pieces(text, config);
                let blocks = vec![text_block(pieces.context), text_block(pieces.question)];
                *content = Value::Array(blocks);
                rewrite::note(config, applied);
            }
        }
        Value::Array(blocks) => edit_blocks(blocks, config, applied),
        _ => {}
    }
}

fn edit_blocks(blocks: &mut Vec<Value>, config: &RewriteConfig, applied: &mut Applied) {
    let views: Vec<PartView<'_>> = blocks.iter().map(view).collect();
    let Some(plan) = rewrite::plan(&views, config) else {
        return;
    };
    match plan {
        Plan::QuestionLast { questions } => {
            rewrite::move_last(blocks, questions, config, text_mut);
        }
        Plan::Split(split) => {
            // The plan splits only a message of one text block.
            let Some(mut block) = std::mem::take(blocks).into_iter().next() else {
                return;
            };
            let Some(text) = text_mut(&mut block) else {
                blocks.push(block);
                return;
            };
            let pieces = split.take_pieces(text, config);
            *blocks = rewrite::split_in_two(block, pieces, text_mut).into();
        }
    }
    rewrite::note(config, applied);
}

fn view(block: &Value) -> PartView<'_> {
    let Some(object) = block.as_object() else {
        return PartView::Other;
    };
    match object.get("type").and_then(Value::as_str) {
        Some("text") => match text_of(block) {
            Some(text) => PartView::Text {
                text,
                plain: holds_only(object, &["type", "text"]),
            },
            None => PartView::Other,
        },
        Some("image" | "document") => PartView::Media,
        // `tool_use`, `tool_result`, and the server tools' `server_tool_use`,
        // `web_search_tool_result`, `mcp_tool_use`, …
        Some(kind) if kind.ends_with("tool_use") || kind.ends_with("tool_result") => PartView::Tool,
        _ => PartView::Other,
    }
}

fn holds_only(object: &Map<String, Value>, keys: &[&str]) -> bool {
    object.keys().all(|key| keys.contains(&key.as_str()))
}

fn text_of(block: &Value) -> Option<&str> {
    block.get("text").and_then(Value::as_str)
}

fn text_mut(block: &mut Value) -> Option<&mut String> {
    match block.get_mut("text")? {
        Value::String(text) => Some(text),
        _ => None,
    }
}

fn text_block(text: String) -> Value {
    let mut block = Map::new();
    block.insert("type".into(), Value::String("text".into()));
    block.insert("text".into(), Value::String(text));
    Value::Object(block)
}
