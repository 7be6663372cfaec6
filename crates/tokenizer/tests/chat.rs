//! Chat templates: the real SmolLM2 template against the prompts llama.cpp was given, the
//! ChatML fallback, and the Hugging Face helpers templates rely on.

mod common;

use common::{greedy_cases, smollm2};
use kiln_tokenizer::{ChatMessage, ChatTemplate, Tokenizer, TokenizerSpec, CHATML_TEMPLATE};

fn prompt(name: &str) -> (String, Vec<u32>) {
    let case = greedy_cases()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("greedy.jsonl has no case {name}"));
    (case.prompt, case.prompt_token_ids)
}

#[test]
fn smollm2_template_with_system_message() {
    let t = smollm2();
    let tmpl = ChatTemplate::from_tokenizer(t);
    assert!(!tmpl.is_fallback());
    let rendered = tmpl
        .render(
            &[
                ChatMessage::system("You are a concise assistant."),
                ChatMessage::user("Explain in one sentence what a CPU does."),
            ],
            true,
        )
        .unwrap();
    let (want, want_ids) = prompt("chat_cpu_custom_system");
    assert_eq!(rendered, want);
    assert_eq!(t.encode(&rendered, true, true), want_ids);
}

#[test]
fn smollm2_template_inserts_default_system_prompt() {
    let t = smollm2();
    let tmpl = ChatTemplate::from_tokenizer(t);
    let rendered = tmpl
        .render(&[ChatMessage::user("What is the capital of France?")], true)
        .unwrap();
    let (want, want_ids) = prompt("chat_capital");
    assert_eq!(rendered, want);
    assert!(rendered.contains("You are a helpful AI assistant named SmolLM"));
    assert_eq!(t.encode(&rendered, true, true), want_ids);
}

#[test]
fn smollm2_template_multi_turn_without_generation_prompt() {
    let tmpl = ChatTemplate::from_tokenizer(smollm2());
    let rendered = tmpl
        .render(
            &[
                ChatMessage::system("S"),
                ChatMessage::user("Hi"),
                ChatMessage::assistant("Hello!"),
                ChatMessage::user("Bye"),
            ],
            false,
        )
        .unwrap();
    assert_eq!(
        rendered,
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
         <|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
    );
}

fn tiny(template: Option<&str>) -> Tokenizer {
    Tokenizer::from_spec(TokenizerSpec {
        model: "gpt2".into(),
        pre: Some("gpt2".into()),
        tokens: vec!["<s>".into(), "</s>".into(), "a".into()],
        token_types: vec![3, 3, 1],
        bos: Some(0),
        eos: Some(1),
        chat_template: template.map(str::to_owned),
        ..Default::default()
    })
    .unwrap()
}

const CHATML_HI: &str = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n";

#[test]
fn chatml_fallback_without_template() {
    let tmpl = ChatTemplate::from_tokenizer(&tiny(None));
    assert!(tmpl.is_fallback());
    assert_eq!(tmpl.source(), CHATML_TEMPLATE);
    assert_eq!(
        tmpl.render(&[ChatMessage::user("hi")], true).unwrap(),
        CHATML_HI
    );
    assert_eq!(
        ChatTemplate::chatml()
            .render(&[ChatMessage::user("hi")], false)
            .unwrap(),
        "<|im_start|>user\nhi<|im_end|>\n"
    );
    assert_eq!(
        ChatTemplate::chatml().render(&[], true).unwrap(),
        "<|im_start|>assistant\n"
    );
}

#[test]
fn chatml_fallback_for_broken_template() {
    let broken = "{% for message in messages %}{{ message['content'] }";
    assert!(ChatTemplate::new(broken, "", "").is_err());
    let tmpl = ChatTemplate::from_tokenizer(&tiny(Some(broken)));
    assert!(tmpl.is_fallback());
    assert_eq!(
        tmpl.render(&[ChatMessage::user("hi")], true).unwrap(),
        CHATML_HI
    );
}

#[test]
fn raise_exception_is_an_error() {
    let src = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}\
               {% endif %}ok";
    let tmpl = ChatTemplate::from_tokenizer(&tiny(Some(src)));
    assert!(!tmpl.is_fallback());
    assert_eq!(tmpl.render(&[ChatMessage::user("x")], false).unwrap(), "ok");
    let err = tmpl
        .render(&[ChatMessage::assistant("x")], false)
        .unwrap_err();
    assert!(err.to_string().contains("first must be user"), "{err}");
}

#[test]
fn hf_helpers_and_variables() {
    let src = "{{ bos_token }}{% for m in messages %}[{{ m.role|upper }}] {{ m.content.strip() }}\
               {% if m.content.startswith(' ') %}*{% endif %}{{ eos_token }}{% endfor %}\
               |{{ messages[0]|tojson }}|{{ strftime_now('%Y')|length }}";
    let tmpl = ChatTemplate::from_tokenizer(&tiny(Some(src)));
    let out = tmpl
        .render(&[ChatMessage::user("  hé \"x\"  ")], false)
        .unwrap();
    assert_eq!(
        out,
        "<s>[USER] hé \"x\"*</s>|{\"role\": \"user\", \"content\": \"  hé \\\"x\\\"  \"}|4"
    );
}

#[test]
fn trim_and_lstrip_blocks_like_transformers() {
    let src = "{% for m in messages %}\n    {% if m.role == 'user' %}\nU:{{ m.content }}\n    {% endif %}\n{% endfor %}";
    let tmpl = ChatTemplate::new(src, "", "").unwrap();
    let out = tmpl
        .render(&[ChatMessage::user("a"), ChatMessage::user("b")], false)
        .unwrap();
    assert_eq!(out, "U:a\nU:b\n");
}

#[test]
fn loop_controls_and_namespace() {
    let src =
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% if loop.index > 2 %}{% break %}\
               {% endif %}{% set ns.n = ns.n + 1 %}{{ m.content }}{% endfor %}:{{ ns.n }}";
    let tmpl = ChatTemplate::new(src, "", "").unwrap();
    let msgs: Vec<ChatMessage> = ["a", "b", "c"]
        .iter()
        .map(|c| ChatMessage::user(*c))
        .collect();
    assert_eq!(tmpl.render(&msgs, false).unwrap(), "ab:2");
}
