//! Hand-written layouts per dialect; properties in `props`, the built-in workloads in
//! `workloads`.

mod props;
mod workloads;

use serde_json::{Value, json};

use super::*;

pub(super) fn config() -> RewriteConfig {
    RewriteConfig {
        question_last: true,
        question_max_tokens: 256,
        context_min_tokens: 1024,
        stable_tools: false,
        ground_question: false,
        ground_sentence: "Based on the information above, answer: ".into(),
    }
}

fn gemini() -> Endpoint {
    Endpoint::GeminiGenerate {
        model: "gemini-2.5-flash".into(),
        stream: false,
    }
}

/// `paragraphs` paragraphs of about 75 bytes: 55 or more make context (4096 bytes).
pub(super) fn document(paragraphs: usize) -> String {
    (0..paragraphs)
        .map(|i| {
            format!("Paragraph {i} reports that the numbers went up again for the whole team.")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

const Q: &str = "What does paragraph 7 report?";

/// Rewrites a copy of `body`; the result as compact JSON, and what was applied.
fn run(endpoint: &Endpoint, body: &Value, config: &RewriteConfig) -> (String, Vec<Rewrite>) {
    let mut body = body.clone();
    let applied = rewrite(endpoint, &mut body, config);
    (body.to_string(), applied)
}

fn assert_rewrites(endpoint: &Endpoint, before: Value, after: Value, want: &[Rewrite]) {
    let (got, applied) = run(endpoint, &before, &config());
    assert_eq!(got, after.to_string());
    assert_eq!(applied, want);
    let (again, applied) = run(endpoint, &after, &config());
    assert_eq!(again, after.to_string(), "not idempotent");
    assert!(applied.is_empty());
}

fn assert_untouched(endpoint: &Endpoint, body: Value) {
    let (got, applied) = run(endpoint, &body, &config());
    assert_eq!(got, body.to_string());
    assert!(applied.is_empty(), "{applied:?}");
}

fn text(t: &str) -> Value {
    json!({"type": "text", "text": t})
}

const IMAGE: &str =
    r#"{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBOR"}}"#;

fn image() -> Value {
    serde_json::from_str(IMAGE).unwrap_or_default()
}

#[test]
fn anthropic_question_part_goes_after_the_document_part() {
    let doc = document(60);
    assert_rewrites(
        &Endpoint::AnthropicMessages,
        json!({"model": "m", "messages": [{"role": "user", "content": [text(Q), text(&doc)]}]}),
        json!({"model": "m", "messages": [{"role": "user", "content": [text(&doc), text(Q)]}]}),
        &[Rewrite::QuestionLast],
    );
}

#[test]
fn anthropic_string_splits_into_two_blocks_separator_with_the_document() {
    let doc = document(60);
    assert_rewrites(
        &Endpoint::AnthropicMessages,
        json!({"messages": [{"role": "user", "content": format!("{Q}\n\n{doc}")}]}),
        json!({"messages": [{"role": "user", "content": [text(&format!("{doc}\n\n")), text(Q)]}]}),
        &[Rewrite::QuestionLast],
    );
    // Every newline of the blank line stays with the document.
    assert_rewrites(
        &Endpoint::AnthropicMessages,
        json!({"messages": [{"role": "user", "content": [text(&format!("{Q}\n\n\n{doc}"))]}]}),
        json!({"messages": [{"role": "user", "content": [text(&format!("{doc}\n\n\n")), text(Q)]}]}),
        &[Rewrite::QuestionLast],
    );
}

#[test]
fn openai_string_is_swapped_and_a_single_part_split_in_two() {
    let doc = document(60);
    for endpoint in [Endpoint::Chat, Endpoint::Responses] {
        let (key, kind) = match endpoint {
            Endpoint::Chat => ("messages", "text"),
            _ => ("input", "input_text"),
        };
        assert_rewrites(
            &endpoint,
            json!({key: [{"role": "system", "content": "s"}, {"role": "user", "content": format!("{Q}\n\n{doc}")}]}),
            json!({key: [{"role": "system", "content": "s"}, {"role": "user", "content": format!("{doc}\n\n{Q}")}]}),
            &[Rewrite::QuestionLast],
        );
        let part = |t: &str| json!({"type": kind, "text": t});
        assert_rewrites(
            &endpoint,
            json!({key: [{"role": "user", "content": [part(&format!("{Q}\n\n{doc}"))]}]}),
            json!({key: [{"role": "user", "content": [part(&format!("{doc}\n\n")), part(Q)]}]}),
            &[Rewrite::QuestionLast],
        );
    }
    assert_rewrites(
        &Endpoint::Responses,
        json!({"input": format!("{Q}\n\n{doc}"), "store": false}),
        json!({"input": format!("{doc}\n\n{Q}"), "store": false}),
        &[Rewrite::QuestionLast],
    );
}

#[test]
fn gemini_string_stays_one_turn_when_no_cache_takes_the_document() {
    let doc = document(60);
    let mut body = json!({"contents": [
        {"role": "user", "parts": [{"text": format!("{Q}\n\n{doc}")}]}]});
    let applied = rewrite_turns(&gemini(), &mut body, &config(), Turns::Keep);
    assert_eq!(applied, [Rewrite::QuestionLast]);
    assert_eq!(
        body,
        json!({"contents": [
            {"role": "user", "parts": [{"text": format!("{doc}\n\n{Q}")}]}]})
    );
}

#[test]
fn gemini_string_splits_into_two_user_contents() {
    let doc = document(60);
    assert_rewrites(
        &gemini(),
        json!({"contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"text": "hello"}]},
            {"role": "user", "parts": [{"text": format!("{Q}\n\n{doc}")}]}],
            "generationConfig": {"maxOutputTokens": 9}}),
        json!({"contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"text": "hello"}]},
            {"role": "user", "parts": [{"text": format!("{doc}\n\n")}]},
            {"role": "user", "parts": [{"text": Q}]}],
            "generationConfig": {"maxOutputTokens": 9}}),
        &[Rewrite::QuestionLast, Rewrite::GeminiSplitTurn],
    );
    // A missing role is the user's.
    assert_rewrites(
        &gemini(),
        json!({"contents": [{"parts": [{"text": Q}, {"text": doc}]}]}),
        json!({"contents": [{"parts": [{"text": doc}, {"text": Q}]}]}),
        &[Rewrite::QuestionLast],
    );
}

#[test]
fn images_documents_and_files_are_context() {
    let q = json!({"type": "text", "text": Q});
    let pdf = json!({"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}});
    assert_rewrites(
        &Endpoint::AnthropicMessages,
        json!({"messages": [{"role": "user", "content": [q, image(), pdf]}]}),
        json!({"messages": [{"role": "user", "content": [image(), pdf, q]}]}),
        &[Rewrite::QuestionLast],
    );
    let url = json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}});
    assert_rewrites(
        &Endpoint::Chat,
        json!({"messages": [{"role": "user", "content": [q, url]}]}),
        json!({"messages": [{"role": "user", "content": [url, q]}]}),
        &[Rewrite::QuestionLast],
    );
    let q = json!({"type": "input_text", "text": Q});
    let (img, file) = (
        json!({"type": "input_image", "image_url": "https://x/a.png", "detail": "auto"}),
        json!({"type": "input_file", "file_id": "file-1"}),
    );
    assert_rewrites(
        &Endpoint::Responses,
        json!({"input": [{"type": "message", "role": "user", "content": [q, img, file]}]}),
        json!({"input": [{"type": "message", "role": "user", "content": [img, file, q]}]}),
        &[Rewrite::QuestionLast],
    );
    let (inline, file) = (
        json!({"inlineData": {"mimeType": "image/png", "data": "AA"}}),
        json!({"file_data": {"file_uri": "gs://b/a.pdf"}}),
    );
    assert_rewrites(
        &gemini(),
        json!({"contents": [{"role": "user", "parts": [{"text": Q}, inline, file]}]}),
        json!({"contents": [{"role": "user", "parts": [inline, file, {"text": Q}]}]}),
        &[Rewrite::QuestionLast],
    );
}

#[test]
fn several_questions_move_together_in_their_order() {
    let doc = document(60);
    assert_rewrites(
        &Endpoint::AnthropicMessages,
        json!({"messages": [{"role": "user", "content": [text("Read this."), text(Q), image(), text(&doc)]}]}),
        json!({"messages": [{"role": "user", "content": [image(), text(&doc), text("Read this."), text(Q)]}]}),
        &[Rewrite::QuestionLast],
    );
}

#[test]
fn labels_interleaved_with_documents_stay() {
    let (a, b) = (document(60), document(70));
    assert_untouched(
        &Endpoint::AnthropicMessages,
        json!({"messages": [{"role": "user", "content": [text("Doc A:"), text(&a), text("Doc B:"), text(&b)]}]}),
    );
    assert_untouched(
        &Endpoint::Chat,
        json!({"messages": [{"role": "user", "content": [text("Doc A:"), text(&a), text("Doc B:"), text(&b)]}]}),
    );
    assert_untouched(
        &gemini(),
        json!({"contents": [{"role": "user", "parts": [{"text": "Doc A:"}, {"text": a}, {"text": "Doc B:"}, {"text": b}]}]}),
    );
}

#[test]
fn messages_with_tool_blocks_stay() {
    let doc = document(60);
    assert_untouched(
        &Endpoint::AnthropicMessages,
        json!({"messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "ok"}, text(Q), text(&doc)]}]}),
    );
    assert_untouched(
        &gemini(),
        json!({"contents": [{"role": "user", "parts": [
            {"functionResponse": {"name": "f", "response": {}}}, {"text": Q}, {"text": doc}]}]}),
    );
    assert_untouched(
        &Endpoint::Chat,
        json!({"messages": [{"role": "tool", "tool_call_id": "t1", "content": format!("{Q}\n\n{doc}")}]}),
    );
}

#[test]
fn short_documents_and_assistant_turns_stay() {
    let short = document(20);
    assert_untouched(
        &Endpoint::AnthropicMessages,
        json!({"messages": [{"role": "user", "content": [text(Q), text(&short)]}]}),
    );
    assert_untouched(
        &Endpoint::Chat,
        json!({"messages": [{"role": "user", "content": format!("{Q}\n\n{short}")}]}),
    );
    let doc = document(60);
    assert_untouched(
        &Endpoint::AnthropicMessages,
        json!({"messages": [{"role": "assistant", "content": [text(Q), text(&doc)]}]}),
    );
    assert_untouched(
        &Endpoint::Chat,
        json!({"messages": [{"role": "assistant", "content": format!("{Q}\n\n{doc}")}]}),
    );
    assert_untouched(
        &gemini(),
        json!({"contents": [{"role": "model", "parts": [{"text": format!("{Q}\n\n{doc}")}]}]}),
    );
}

#[test]
fn a_string_splits_only_when_its_first_paragraph_asks_and_it_is_not_context_first() {
    let doc = document(60);
    let user = |content: String| json!({"messages": [{"role": "user", "content": content}]});
    // A title is not a question.
    assert_untouched(&Endpoint::Chat, user(format!("Quarterly report\n\n{doc}")));
    // Context first already, even with a document that opens with a short paragraph.
    assert_untouched(&Endpoint::Chat, user(format!("{doc}\n\n{Q}")));
    assert_untouched(&Endpoint::Chat, user(format!("Agenda:\n\n{doc}\n\n{Q}")));
    // An instruction about what follows is one.
    let ask = "Summarize the following:";
    assert_rewrites(
        &Endpoint::Chat,
        user(format!("{ask}\n\n{doc}")),
        user(format!("{doc}\n\n{ask}")),
        &[Rewrite::QuestionLast],
    );
    // Not a question: a text part that carries more than its text is not split.
    let tagged = json!({"type": "text", "text": format!("{Q}\n\n{doc}"), "cache_control": {"type": "ephemeral"}});
    assert_untouched(
        &Endpoint::AnthropicMessages,
        json!({"messages": [{"role": "user", "content": [tagged]}]}),
    );
}

#[test]
fn ground_question_prefixes_the_moved_question() {
    let doc = document(60);
    let config = RewriteConfig {
        ground_question: true,
        ..config()
    };
    let grounded = format!("{}{Q}", config.ground_sentence);
    let body = json!({"messages": [{"role": "user", "content": [text(Q), text(&doc)]}]});
    let (got, applied) = run(&Endpoint::AnthropicMessages, &body, &config);
    let want = json!({"messages": [{"role": "user", "content": [text(&doc), text(&grounded)]}]});
    assert_eq!(got, want.to_string());
    assert_eq!(applied, [Rewrite::QuestionLast, Rewrite::GroundQuestion]);
    let body = json!({"messages": [{"role": "user", "content": format!("{Q}\n\n{doc}")}]});
    let (got, _) = run(&Endpoint::Chat, &body, &config);
    let want = json!({"messages": [{"role": "user", "content": format!("{doc}\n\n{grounded}")}]});
    assert_eq!(got, want.to_string());
    // A split block: the question piece is grounded, the context piece keeps the blank line.
    let body = json!({"messages": [{"role": "user", "content": [text(&format!("{Q}\n\n{doc}"))]}]});
    let (got, _) = run(&Endpoint::AnthropicMessages, &body, &config);
    let want = json!({"messages": [{"role": "user", "content": [text(&format!("{doc}\n\n")), text(&grounded)]}]});
    assert_eq!(got, want.to_string());
    let body = json!({"messages": [{"role": "user", "content": Q}]});
    assert_eq!(run(&Endpoint::Chat, &body, &config).1, []);
}

#[test]
fn stable_tools_sorts_by_name_only_when_out_of_order() {
    let sorting = RewriteConfig {
        stable_tools: true,
        ..config()
    };
    let fun = |n: &str| json!({"type": "function", "function": {"name": n, "parameters": {"z": 1, "a": 2}}});
    let named = |n: &str| json!({"name": n, "description": "d", "input_schema": {"z": 1, "a": 2}});
    let cases = [
        (
            Endpoint::Chat,
            json!({"tools": [fun("b"), fun("a"), fun("c")]}),
            json!({"tools": [fun("a"), fun("b"), fun("c")]}),
        ),
        (
            Endpoint::Responses,
            json!({"tools": [named("b"), named("a")]}),
            json!({"tools": [named("a"), named("b")]}),
        ),
        (
            Endpoint::AnthropicMessages,
            json!({"tools": [named("b"), named("a")]}),
            json!({"tools": [named("a"), named("b")]}),
        ),
        (
            gemini(),
            json!({"tools": [{"functionDeclarations": [named("b"), named("a")]}, {"googleSearch": {}}]}),
            json!({"tools": [{"functionDeclarations": [named("a"), named("b")]}, {"googleSearch": {}}]}),
        ),
    ];
    for (endpoint, before, after) in cases {
        let (got, applied) = run(&endpoint, &before, &sorting);
        assert_eq!(got, after.to_string(), "{endpoint:?}");
        assert_eq!(applied, [Rewrite::StableTools]);
        let (again, applied) = run(&endpoint, &after, &sorting);
        assert_eq!((again, applied), (after.to_string(), vec![]));
        assert_eq!(run(&endpoint, &before, &config()).1, [], "off by default");
    }
    // A tool without a name has no place in the order: the list is left as sent.
    let web = json!({"type": "web_search"});
    let body = json!({"tools": [named("b"), web, named("a")]});
    assert_eq!(run(&Endpoint::Responses, &body, &sorting).1, []);
}

#[test]
fn nothing_is_rewritten_when_off_or_off_route() {
    let doc = document(60);
    let body = json!({"messages": [{"role": "user", "content": [text(Q), text(&doc)]}]});
    let off = RewriteConfig {
        question_last: false,
        ..config()
    };
    assert_eq!(run(&Endpoint::AnthropicMessages, &body, &off).1, []);
    assert_untouched(&Endpoint::AnthropicCountTokens, body);
    let contents = json!({"contents": [{"role": "user", "parts": [{"text": Q}, {"text": doc}]}]});
    assert_untouched(&Endpoint::GeminiCachedContents, contents.clone());
    assert_untouched(&Endpoint::GeminiCountTokens { model: "m".into() }, contents);
}

#[test]
fn header_vocabulary() {
    let all = [
        Rewrite::QuestionLast,
        Rewrite::GeminiSplitTurn,
        Rewrite::StableTools,
        Rewrite::GroundQuestion,
    ];
    let names: Vec<&str> = all.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        names,
        [
            "question_last",
            "gemini_split_turn",
            "stable_tools",
            "ground_question"
        ]
    );
    assert!(all.is_sorted(), "the header lists them in this order");
}

#[test]
fn the_plan_reads_sizes_by_the_byte_estimate() {
    let config = config();
    let text = |text| PartView::Text { text, plain: true };
    let question = "q".repeat(256 * 4);
    let too_long = "q".repeat(256 * 4 + 1);
    let context = "c".repeat(1024 * 4 - 3);
    let too_short = "c".repeat(1024 * 4 - 4);
    let plan_of = |parts: &[PartView<'_>]| plan(parts, &config);
    assert_eq!(
        plan_of(&[text(&question), text(&context)]),
        Some(Plan::QuestionLast { questions: 1 })
    );
    assert_eq!(plan_of(&[text(&too_long), text(&context)]), None);
    assert_eq!(plan_of(&[text(&question), text(&too_short)]), None);
    assert_eq!(
        plan_of(&[text(&question), PartView::Media]),
        Some(Plan::QuestionLast { questions: 1 })
    );
    assert_eq!(plan_of(&[text(&question)]), None);
    assert_eq!(plan_of(&[PartView::Media, text(&question)]), None);
    assert_eq!(
        plan_of(&[text(&question), PartView::Media, PartView::Other]),
        None
    );
    assert_eq!(
        plan_of(&[text(&question), PartView::Media, PartView::Tool]),
        None
    );
}
