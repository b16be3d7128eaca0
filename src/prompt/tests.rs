use serde_json::json;

use super::*;

fn kinds<'a>(p: &Prompt<'a>) -> Vec<(Place, Option<&'a str>, SegmentKind)> {
    p.segments
        .iter()
        .map(|s| (s.place, s.role, s.kind))
        .collect()
}

fn msg(index: usize, part: usize) -> Place {
    Place::Message { index, part }
}

use SegmentKind::*;

#[test]
fn chat_renders_tools_then_messages_with_parts_calls_and_results() {
    let body = json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "assistant", "refusal": "no"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]});
    let p = prompt(&Endpoint::Chat, &body).unwrap();
    assert_eq!(p.model, Some("gpt-4o"));
    assert_eq!(
        kinds(&p),
        vec![
            (Place::Tools(0), None, ToolDef),
            (msg(0, 0), Some("system"), Text),
            (msg(1, 0), Some("user"), Text),
            (msg(1, 1), Some("user"), Image),
            (msg(2, 0), Some("assistant"), ToolCall),
            (msg(3, 0), Some("tool"), ToolResult),
            (msg(4, 0), Some("assistant"), Other),
        ]
    );
    assert_eq!(p.segments[1].content, Content::Text("be brief"));
    assert_eq!(p.segments[2].content, Content::Text("what is this?"));
    assert_eq!(
        p.segments[5].content,
        Content::Json(&body["messages"][3]),
        "a tool message is its result, call id included"
    );
    assert_eq!(
        p.segments[6].content,
        Content::Json(&body["messages"][4]),
        "a message with nothing known is kept whole"
    );
}

#[test]
fn responses_read_instructions_string_input_and_items() {
    let body = json!({"model": "gpt-5", "instructions": "sys", "input": "hi"});
    let p = prompt(&Endpoint::Responses, &body).unwrap();
    assert_eq!(
        kinds(&p),
        vec![
            (Place::System(0), None, Text),
            (msg(0, 0), Some("user"), Text)
        ]
    );
    assert_eq!(p.segments[1].content, Content::Text("hi"));

    let body = json!({"model": "gpt-5", "previous_response_id": "resp_1", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "https://x"},
            {"type": "input_file", "file_id": "f"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok", "annotations": []}]},
        {"type": "reasoning", "id": "rs", "summary": []},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "1"},
        {"role": "developer", "content": "rules"}]});
    let p = prompt(&Endpoint::Responses, &body).unwrap();
    assert_eq!(p.context, Some(StoredContext::PreviousResponse("resp_1")));
    assert_eq!(
        kinds(&p),
        vec![
            (msg(0, 0), Some("user"), Text),
            (msg(0, 1), Some("user"), Image),
            (msg(0, 2), Some("user"), File),
            (msg(1, 0), Some("assistant"), Text),
            (msg(2, 0), None, Other),
            (msg(3, 0), None, ToolCall),
            (msg(4, 0), None, ToolResult),
            (msg(5, 0), Some("developer"), Text),
        ]
    );
    assert_eq!(p.segments[0].content, Content::Text("look"));
    assert!(
        matches!(p.segments[3].content, Content::Json(_)),
        "annotations stay with the text"
    );
    let body = json!({"input": "x", "conversation": {"id": "conv_1"}});
    let p = prompt(&Endpoint::Responses, &body).unwrap();
    assert_eq!(p.context, Some(StoredContext::Conversation("conv_1")));
}

#[test]
fn anthropic_renders_tools_system_then_blocks() {
    let body = json!({"model": "claude-sonnet-4-5", "tools": [{"name": "t", "input_schema": {}}],
        "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}},
                {"type": "image", "source": {"type": "url", "url": "https://x"}},
                {"type": "text", "text": "q?"}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "see", "citations": []},
                {"type": "tool_use", "id": "t1", "name": "t", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "r"},
                {"type": "web_search_tool_result", "tool_use_id": "s", "content": []}]},
            {"role": "user", "content": "plain"}]});
    let p = prompt(&Endpoint::AnthropicMessages, &body).unwrap();
    assert_eq!(
        kinds(&p),
        vec![
            (Place::Tools(0), None, ToolDef),
            (Place::System(0), None, Text),
            (msg(0, 0), Some("user"), File),
            (msg(0, 1), Some("user"), Image),
            (msg(0, 2), Some("user"), Text),
            (msg(1, 0), Some("assistant"), Other),
            (msg(1, 1), Some("assistant"), Text),
            (msg(1, 2), Some("assistant"), ToolCall),
            (msg(2, 0), Some("user"), ToolResult),
            (msg(2, 1), Some("user"), ToolResult),
            (msg(3, 0), Some("user"), Text),
        ]
    );
    assert_eq!(p.segments[1].content, Content::Text("sys"));
    assert!(matches!(p.segments[6].content, Content::Json(_)));
    assert_eq!(p.segments[10].content, Content::Text("plain"));
    let counted = prompt(&Endpoint::AnthropicCountTokens, &body).unwrap();
    assert_eq!(counted, p, "count_tokens sends the same prompt");
}

#[test]
fn gemini_renders_tools_system_instruction_then_contents() {
    let body = json!({"cachedContent": "cachedContents/abc",
        "tools": [{"functionDeclarations": [{"name": "f"}]}],
        "systemInstruction": {"parts": [{"text": "sys"}]},
        "contents": [
            {"role": "user", "parts": [{"text": "hi"},
                {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
                {"file_data": {"mime_type": "application/pdf", "file_uri": "gs://x"}}]},
            {"role": "model", "parts": [{"text": "plan", "thought": true},
                {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "sig"}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]});
    let endpoint = Endpoint::GeminiGenerate {
        model: "gemini-2.5-flash".into(),
        stream: true,
    };
    let p = prompt(&endpoint, &body).unwrap();
    assert_eq!(p.model, Some("gemini-2.5-flash"));
    assert_eq!(p.cached_content(), Some("cachedContents/abc"));
    assert_eq!(
        kinds(&p),
        vec![
            (Place::Tools(0), None, ToolDef),
            (Place::System(0), None, Text),
            (msg(0, 0), Some("user"), Text),
            (msg(0, 1), Some("user"), Image),
            (msg(0, 2), Some("user"), File),
            (msg(1, 0), Some("model"), Other),
            (msg(1, 1), Some("model"), ToolCall),
            (msg(2, 0), Some("user"), ToolResult),
        ]
    );

    let wrapped = json!({"generateContentRequest": {"model": "models/other",
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}]}});
    let count = Endpoint::GeminiCountTokens {
        model: "gemini-2.5-pro".into(),
    };
    let p = prompt(&count, &wrapped).unwrap();
    assert_eq!(p.model, Some("gemini-2.5-pro"), "the path names the model");
    assert_eq!(p.segments[0].content, Content::Text("hi"));
}

#[test]
fn a_cached_content_create_is_a_prompt_and_other_calls_are_not() {
    let create = json!({"model": "models/gemini-2.5-flash", "ttl": "300s",
        "system_instruction": {"parts": [{"text": "sys"}]},
        "contents": [{"role": "user", "parts": [{"text": "doc"}]}]});
    let p = prompt(&Endpoint::GeminiCachedContents, &create).unwrap();
    assert_eq!(p.model, Some("gemini-2.5-flash"));
    assert_eq!(p.segments.len(), 2);
    assert_eq!(p.context, None);
    let patch = json!({"ttl": "600s"});
    assert_eq!(prompt(&Endpoint::GeminiCachedContents, &patch), None);
    assert_eq!(prompt(&Endpoint::GeminiCachedContents, &Value::Null), None);
    assert_eq!(prompt(&Endpoint::Chat, &json!([1])), None);
    assert_eq!(prompt(&Endpoint::Chat, &json!({"model": "m"})), None);
    assert_eq!(
        prompt(&Endpoint::AnthropicMessages, &json!({"messages": []})),
        None
    );
}

fn json_segment(value: &Value) -> Segment<'_> {
    Segment {
        place: Place::Tools(0),
        role: None,
        kind: ToolDef,
        content: Content::Json(value),
    }
}

#[test]
fn canonical_json_is_compact_in_the_order_sent() {
    let raw = "{ \"z\": [1, 2.5, -3e2, true, null],\n \"a\": {\"q\\\"\": \"\\u0001\\n\\t\\\\ é \\u2028\"}, \"m\": \"\\u007f\" }";
    let value: Value = serde_json::from_str(raw).unwrap();
    assert_eq!(
        json_segment(&value).canonical(),
        serde_json::to_vec(&value).unwrap(),
        "the same bytes serde_json writes"
    );
}

#[test]
fn cache_control_is_dropped_from_blocks_but_not_from_schemas() {
    let marked = json!({"name": "t", "cache_control": {"type": "ephemeral"},
        "input_schema": {"properties": {"cache_control": {"type": "string"}}},
        "content": [{"type": "text", "text": "a", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]});
    let bare = json!({"name": "t",
        "input_schema": {"properties": {"cache_control": {"type": "string"}}},
        "content": [{"type": "text", "text": "a"}]});
    assert_eq!(
        json_segment(&marked).canonical(),
        serde_json::to_vec(&bare).unwrap()
    );
}

#[test]
fn media_data_is_replaced_by_its_digest() {
    let data = "iVBORw0KGgo".repeat(100);
    let image = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}});
    let segment = Segment {
        kind: Image,
        ..json_segment(&image)
    };
    let digest = blake3::hash(data.as_bytes()).to_hex();
    let want = format!(
        r#"{{"type":"image","source":{{"type":"base64","media_type":"image/png","data":"blake3:{digest}"}}}}"#
    );
    assert_eq!(String::from_utf8(segment.canonical()).unwrap(), want);

    let url = format!("data:image/jpeg;base64,{data}");
    let part = json!({"type": "image_url", "image_url": {"url": url}});
    let canonical = String::from_utf8(json_segment(&part).canonical()).unwrap();
    assert!(canonical.contains("\"url\":\"blake3:"), "{canonical}");
    let link = json!({"type": "image_url", "image_url": {"url": format!("https://x/{data}")}});
    assert_eq!(
        json_segment(&link).canonical(),
        serde_json::to_vec(&link).unwrap(),
        "a link is not data"
    );
    let short = json!({"data": "abc"});
    assert_eq!(
        json_segment(&short).canonical(),
        serde_json::to_vec(&short).unwrap()
    );
}

#[test]
fn a_large_text_is_borrowed_not_copied() {
    let text = "word ".repeat(200_000);
    let body = json!({"model": "m", "messages": [{"role": "user", "content": text}]});
    let p = prompt(&Endpoint::Chat, &body).unwrap();
    let Content::Text(seen) = p.segments[0].content else {
        panic!("text expected");
    };
    let sent = body["messages"][0]["content"].as_str().unwrap();
    assert!(std::ptr::eq(seen.as_bytes(), sent.as_bytes()));
    assert_eq!(seen.len(), 1_000_000);
}
