// Tests may panic on broken fixtures; the crate denies expect/unwrap only outside tests.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::*;

const VECTORS: &str = include_str!("../../../../../tests/fixtures/twiml-connect-stream.json");
const MEDIA_URL: &str = "wss://media.example.com/twilio/media";

#[derive(Deserialize)]
struct Vectors {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    id: String,
    xml: String,
    xml_without_declaration: String,
    semantic_tree: Value,
}

fn cases() -> Vec<Case> {
    let vectors: Vectors = serde_json::from_str(VECTORS).expect("fixture parses");
    assert_eq!(vectors.cases.len(), 8, "fixture case count changed");
    vectors.cases
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

fn stream(url: &str) -> ConnectStream {
    ConnectStream {
        url: url.to_owned(),
        ..ConnectStream::default()
    }
}

/// roxmltree → the fixture's `{name, attrs, text, children}` shape (`text` is the text before
/// the first child element, like `ElementTree`'s `.text`).
fn semantic(node: roxmltree::Node<'_, '_>) -> Value {
    let attrs: Map<String, Value> = node
        .attributes()
        .map(|a| (a.name().to_owned(), Value::from(a.value())))
        .collect();
    let text: String = node
        .children()
        .take_while(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect();
    let children: Vec<Value> = node
        .children()
        .filter(|n| n.is_element())
        .map(semantic)
        .collect();
    json!({
        "name": node.tag_name().name(),
        "attrs": attrs,
        "text": if text.is_empty() { Value::Null } else { Value::from(text) },
        "children": children,
    })
}

fn parse_semantic(xml: &str) -> Value {
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
    semantic(doc.root_element())
}

/// Document for a fixture case, or `None` for cases outside `connect_stream_response`.
fn build(id: &str) -> Option<String> {
    let fallback = Fallback::default();
    let built = match id {
        "connect-stream-minimal" => connect_stream_response(&stream(MEDIA_URL), None, &fallback),
        "connect-stream-with-parameters" => {
            let s = ConnectStream {
                parameters: pairs(&[
                    ("callSid", "CAfedcba9876543210fedcba9876543210"),
                    ("token", "3q2-7wAAAAB0b2tlbg"),
                ]),
                ..stream(MEDIA_URL)
            };
            connect_stream_response(&s, None, &fallback)
        }
        "connect-stream-all-attrs" => {
            let s = ConnectStream {
                parameters: pairs(&[("tenant", "acme")]),
                status_callback: Some("https://api.example.com/twilio/stream-status".into()),
                status_callback_method: Some("POST".into()),
                name: Some("agent-stream".into()),
                ..stream(MEDIA_URL)
            };
            connect_stream_response(&s, None, &fallback)
        }
        "connect-stream-parameter-escaping" => {
            let s = ConnectStream {
                parameters: pairs(&[("note", "a&b <c> \"d\" 'e' é\nline2")]),
                ..stream(MEDIA_URL)
            };
            connect_stream_response(&s, None, &fallback)
        }
        "connect-action" => connect_stream_response(
            &stream(MEDIA_URL),
            Some("https://api.example.com/twilio/after-stream"),
            &fallback,
        ),
        // Not expressible with the builder (a <Say> before <Connect>, <Start>/<Pause>, an
        // empty <Response>); `serializer_matches_other_vectors` covers them.
        "say-connect-say" | "start-stream-unidirectional" | "empty-response" => return None,
        other => panic!("unknown fixture case {other}: decide whether the builder covers it"),
    };
    Some(built.unwrap_or_else(|e| panic!("{id}: {e}")))
}

#[test]
fn builder_matches_vectors_byte_exact_and_semantically() {
    let mut built = 0;
    for case in cases() {
        let Some(xml) = build(&case.id) else {
            continue;
        };
        assert_eq!(xml, case.xml, "{}", case.id);
        assert_eq!(
            xml.strip_prefix(XML_DECLARATION),
            Some(case.xml_without_declaration.as_str()),
            "{}",
            case.id
        );
        assert_eq!(parse_semantic(&xml), case.semantic_tree, "{}", case.id);
        built += 1;
    }
    assert_eq!(built, 5);
}

#[test]
fn serializer_matches_other_vectors() {
    let docs = [
        (
            "say-connect-say",
            Element::new("Response")
                .child(Element::new("Say").text("Connecting you now."))
                .child(Element::new("Connect").child(Element::new("Stream").attr("url", MEDIA_URL)))
                .child(Element::new("Say").text("The assistant has disconnected. Goodbye.")),
        ),
        (
            "start-stream-unidirectional",
            Element::new("Response")
                .child(
                    Element::new("Start").child(
                        Element::new("Stream")
                            .attr("url", "wss://media.example.com/twilio/listen")
                            .attr("track", "both_tracks")
                            .attr("name", "monitor"),
                    ),
                )
                .child(Element::new("Pause").attr("length", "60")),
        ),
        ("empty-response", Element::new("Response")),
    ];
    let cases = cases();
    for (id, element) in docs {
        let case = cases
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no case {id}"));
        let xml = element.to_document();
        assert_eq!(xml, case.xml, "{id}");
        assert_eq!(parse_semantic(&xml), case.semantic_tree, "{id}");
    }
}

#[test]
fn the_fixture_xml_parses_to_its_semantic_tree() {
    // Guards the converter itself.
    for case in cases() {
        assert_eq!(parse_semantic(&case.xml), case.semantic_tree, "{}", case.id);
    }
}

#[test]
fn fallback_verbs_follow_connect() {
    let fallback = Fallback {
        say: Some("Sorry, the assistant is unavailable.".into()),
        redirect_url: Some("https://api.example.com/twilio/voicemail?x=1&y=2".into()),
    };
    let xml = connect_stream_response(&stream(MEDIA_URL), None, &fallback).expect("builds");
    assert_eq!(
        xml,
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect>"#,
            r#"<Stream url="wss://media.example.com/twilio/media" /></Connect>"#,
            "<Say>Sorry, the assistant is unavailable.</Say>",
            "<Redirect>https://api.example.com/twilio/voicemail?x=1&amp;y=2</Redirect>",
            "</Response>"
        )
    );

    let empty = Fallback {
        say: Some(String::new()),
        redirect_url: Some(String::new()),
    };
    let xml = connect_stream_response(&stream(MEDIA_URL), None, &empty).expect("builds");
    assert!(!xml.contains("<Say") && !xml.contains("<Redirect"), "{xml}");
}

/// Everything XML or a naive serializer could trip over; `\0`, `\u{1}`, `\u{b}`, `\u{1f}`,
/// `\u{fffe}` and `\u{ffff}` are not XML 1.0 characters and must be dropped.
const HOSTILE: &str = "\"q\" <a> & 'apos' ]]> </Stream></Connect><Hangup/> \n\r\n\t x\0y\u{1}\u{b}\u{1f}\u{7f}\u{85} é ß 日本 👋 \u{fffe}\u{ffff}\u{fffd} &amp; &#10; <![CDATA[x]]> <!-- c --> <?pi?>";

fn without_invalid(s: &str) -> String {
    s.chars()
        .filter(|c| {
            !matches!(
                c,
                '\0' | '\u{1}' | '\u{b}' | '\u{1f}' | '\u{fffe}' | '\u{ffff}'
            )
        })
        .collect()
}

#[test]
fn hostile_values_round_trip_and_keep_structure() {
    let params = pairs(&[("note", HOSTILE), (HOSTILE, "v"), ("plain", "ok")]);
    let s = ConnectStream {
        url: format!("{MEDIA_URL}?{HOSTILE}"),
        parameters: params.clone(),
        status_callback: Some(HOSTILE.into()),
        status_callback_method: Some(HOSTILE.into()),
        name: Some(HOSTILE.into()),
    };
    let fallback = Fallback {
        say: Some(HOSTILE.into()),
        redirect_url: Some(HOSTILE.into()),
    };
    let xml = connect_stream_response(&s, Some(HOSTILE), &fallback).expect("builds");
    // A literal CR would be normalized away by any parser; element text may keep LF and tab.
    assert!(!xml.contains('\r'));

    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
    let response = doc.root_element();
    let names = |node: roxmltree::Node<'_, '_>| -> Vec<String> {
        node.children()
            .map(|n| {
                assert!(n.is_element(), "unexpected non-element node {n:?}");
                n.tag_name().name().to_owned()
            })
            .collect()
    };
    assert_eq!(response.tag_name().name(), "Response");
    assert_eq!(names(response), ["Connect", "Say", "Redirect"]);
    let connect = response.first_element_child().expect("Connect");
    assert_eq!(names(connect), ["Stream"]);
    let stream_el = connect.first_element_child().expect("Stream");
    assert_eq!(names(stream_el), ["Parameter", "Parameter", "Parameter"]);

    let clean = without_invalid(HOSTILE);
    assert_eq!(connect.attribute("action"), Some(clean.as_str()));
    assert_eq!(connect.attribute("method"), Some("POST"));
    let url = format!("{MEDIA_URL}?{clean}");
    assert_eq!(stream_el.attribute("url"), Some(url.as_str()));
    for attr in ["name", "statusCallback", "statusCallbackMethod"] {
        assert_eq!(stream_el.attribute(attr), Some(clean.as_str()), "{attr}");
    }
    for (node, (name, value)) in stream_el.children().zip(&params) {
        assert_eq!(node.attributes().count(), 2);
        assert_eq!(node.attribute("name"), Some(without_invalid(name).as_str()));
        assert_eq!(
            node.attribute("value"),
            Some(without_invalid(value).as_str())
        );
        assert!(!node.has_children());
    }
    for verb in response.children().skip(1) {
        assert_eq!(verb.attributes().count(), 0);
        assert_eq!(verb.children().count(), 1, "one text node");
        assert_eq!(verb.text(), Some(clean.as_str()));
    }
}

#[test]
fn escaping_functions() {
    assert!(matches!(escape_attr("plain é 👋 'x'"), Cow::Borrowed(_)));
    assert!(matches!(
        escape_text("plain\n\t\"q\" 'x'"),
        Cow::Borrowed(_)
    ));
    assert_eq!(
        escape_attr("a&b<c>\"d\"'e'\n\r\t\0\u{ffff}"),
        "a&amp;b&lt;c&gt;&quot;d&quot;'e'&#10;&#13;&#9;"
    );
    assert_eq!(
        escape_text("a&b<c>\"d\"'e'\n\r\t\0\u{ffff}]]>"),
        "a&amp;b&lt;c&gt;\"d\"'e'\n&#13;\t]]&gt;"
    );
    assert_eq!(escape_attr("\u{1}\u{2}"), "");
}

#[test]
fn parameter_length_limit() {
    let with_value = |name: &str, value: String| ConnectStream {
        parameters: vec![("ok".into(), "fine".into()), (name.to_owned(), value)],
        ..stream(MEDIA_URL)
    };
    let fallback = Fallback::default();

    // 5 + 494 = 499 characters: allowed.
    let ok = with_value("token", "x".repeat(494));
    assert!(connect_stream_response(&ok, None, &fallback).is_ok());

    // 5 + 495 = 500: rejected, and the error names the parameter but not the value.
    let secret = format!("SECRET{}", "y".repeat(489));
    let err = connect_stream_response(&with_value("token", secret), None, &fallback)
        .expect_err("too long");
    assert_eq!(
        err,
        TwimlError::ParameterTooLong {
            name: "token".into()
        }
    );
    assert!(!err.to_string().contains("SECRET"));
    assert!(!format!("{err:?}").contains("SECRET"));
    let long = with_value("token", "SECRET".into());
    let shown = format!("{long:?}");
    assert!(
        shown.contains("token") && !shown.contains("SECRET"),
        "{shown}"
    );

    // Counted in characters (UTF-16 units), not UTF-8 bytes: 5 + 494 'é' is 499.
    let accented = with_value("token", "é".repeat(494));
    assert!(connect_stream_response(&accented, None, &fallback).is_ok());
    // An astral character counts twice: 5 + 2 * 248 = 501.
    let emoji = with_value("token", "👋".repeat(248));
    assert!(matches!(
        connect_stream_response(&emoji, None, &fallback),
        Err(TwimlError::ParameterTooLong { .. })
    ));
}

#[test]
fn document_size_limit() {
    let fallback = Fallback::default();
    let with_params = |count: usize| ConnectStream {
        parameters: (0..count)
            .map(|i| (format!("p{i:03}"), "v".repeat(400)))
            .collect(),
        ..stream(MEDIA_URL)
    };
    let ok = connect_stream_response(&with_params(100), None, &fallback).expect("fits");
    assert!(ok.len() <= MAX_RESPONSE_BYTES);
    match connect_stream_response(&with_params(200), None, &fallback) {
        Err(TwimlError::TooLarge { bytes }) => assert!(bytes > MAX_RESPONSE_BYTES),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn dial_escapes_and_ends_with_hangup() {
    let xml = dial("+15551230000", Some("+15557654321"), 25, None);
    assert_eq!(
        xml,
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial answerOnBridge="true" callerId="+15557654321" timeout="25"><Number>+15551230000</Number></Dial><Hangup /></Response>"#
    );
    let xml = dial("+1<&>", None, 30, None);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let number = doc
        .descendants()
        .find(|n| n.has_tag_name("Number"))
        .unwrap();
    assert_eq!(number.text(), Some("+1<&>"), "escaped and parsed back");
    assert!(doc
        .descendants()
        .find(|n| n.has_tag_name("Dial"))
        .unwrap()
        .attribute("callerId")
        .is_none());
}

#[test]
fn dial_with_an_action_reports_the_outcome_there_instead_of_hanging_up() {
    let url = "https://api.example.com/transfer/result?a=1&b=2";
    let xml = dial("+15551230000", None, 20, Some(url));
    assert_eq!(
        xml,
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial action="https://api.example.com/transfer/result?a=1&amp;b=2" answerOnBridge="true" method="POST" timeout="20"><Number>+15551230000</Number></Dial></Response>"#
    );
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let dial = doc.descendants().find(|n| n.has_tag_name("Dial")).unwrap();
    assert_eq!(
        dial.attribute("action"),
        Some(url),
        "escaped and parsed back"
    );
    assert_eq!(
        hang_up(),
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Hangup /></Response>"#
    );
}

#[test]
fn voicemail_says_the_message_then_hangs_up() {
    let xml = say_then_hang_up("Hi, it's the clinic <re: Tuesday> & more");
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let verbs: Vec<&str> = doc
        .root_element()
        .children()
        .map(|n| n.tag_name().name())
        .collect();
    assert_eq!(verbs, ["Say", "Hangup"]);
    let say = doc.descendants().find(|n| n.has_tag_name("Say")).unwrap();
    assert_eq!(say.text(), Some("Hi, it's the clinic <re: Tuesday> & more"));
}

#[test]
fn overflow_dials_the_people_or_says_the_message_and_hangs_up() {
    let dial = overflow(Some("+15557770000"), "unused");
    assert_eq!(
        dial,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say>Please hold while we connect you.</Say><Dial answerOnBridge=\"true\"><Number>+15557770000</Number></Dial></Response>"
    );
    let say = overflow(None, "Busy <now> & later");
    assert_eq!(say, say_then_hang_up("Busy <now> & later"));
    assert!(say.contains("Busy &lt;now&gt; &amp; later"), "{say}");
}
