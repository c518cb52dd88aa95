//! TwiML the voice webhook returns: `<Connect><Stream>` plus optional fallback verbs.
//!
//! Owns serialization (the official library's style), escaping and Twilio's size limits.
//! It does not choose URLs, tokens or parameter values.

use std::borrow::Cow;
use std::fmt;

/// Limit on a `<Parameter>`: name and value together must be *under* this many characters.
///
/// Counted in UTF-16 code units (at least the number of characters), the stricter reading.
pub const MAX_PARAMETER_CHARS: usize = 500;

/// Largest TwiML body Twilio accepts (64 kB, read as 64 000 bytes to stay on the safe side).
pub const MAX_RESPONSE_BYTES: usize = 64_000;

/// XML declaration the official library writes before `<Response>`.
const XML_DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// Errors from building a TwiML document. Messages never include parameter values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwimlError {
    /// A `<Parameter>` name plus value reaches [`MAX_PARAMETER_CHARS`].
    #[error("stream parameter {name:?} is too long (name and value must be under 500 characters)")]
    ParameterTooLong {
        /// Name of the offending parameter.
        name: String,
    },
    /// The document exceeds [`MAX_RESPONSE_BYTES`].
    #[error("twiml document is {bytes} bytes, over the {MAX_RESPONSE_BYTES} byte limit")]
    TooLarge {
        /// Size of the serialized document.
        bytes: usize,
    },
}

/// A bidirectional `<Connect><Stream>`.
///
/// `Debug` shows parameter names only: values may be per-call tokens.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnectStream {
    /// Absolute `wss://` URL of the media server, without a query string.
    pub url: String,
    /// `<Parameter>` pairs, in order; they arrive as `start.customParameters`.
    pub parameters: Vec<(String, String)>,
    /// Absolute URL for stream status callbacks (`statusCallback`).
    pub status_callback: Option<String>,
    /// `GET` or `POST` (Twilio's default) for the status callback (`statusCallbackMethod`).
    pub status_callback_method: Option<String>,
    /// Stream name, unique per call (`name`).
    pub name: Option<String>,
}

impl fmt::Debug for ConnectStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.parameters.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("ConnectStream")
            .field("url", &self.url)
            .field("parameter_names", &names)
            .field("status_callback", &self.status_callback)
            .field("status_callback_method", &self.status_callback_method)
            .field("name", &self.name)
            .finish()
    }
}

/// Verbs after `</Connect>`; Twilio runs them when the stream ends and `<Connect>` has no
/// `action`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fallback {
    /// Text for a `<Say>` (an empty string means no `<Say>`).
    pub say: Option<String>,
    /// URL for a `<Redirect>` after the `<Say>` (an empty string means no `<Redirect>`, which
    /// would otherwise re-request the current document).
    pub redirect_url: Option<String>,
}

/// Builds `<Response><Connect><Stream>…</Stream></Connect>[<Say>][<Redirect>]</Response>`
/// with the XML declaration, on one line, in the official library's serialization style.
///
/// With `connect_action`, `<Connect>` gets `action` and an explicit `method="POST"` (Twilio's
/// default), as the library writes it. Characters XML 1.0 does not allow are dropped.
///
/// # Errors
///
/// [`TwimlError::ParameterTooLong`] if a parameter's name and value together reach
/// [`MAX_PARAMETER_CHARS`]; [`TwimlError::TooLarge`] if the document exceeds
/// [`MAX_RESPONSE_BYTES`].
pub fn connect_stream_response(
    stream: &ConnectStream,
    connect_action: Option<&str>,
    fallback: &Fallback,
) -> Result<String, TwimlError> {
    for (name, value) in &stream.parameters {
        let chars = name.encode_utf16().count() + value.encode_utf16().count();
        if chars >= MAX_PARAMETER_CHARS {
            return Err(TwimlError::ParameterTooLong { name: name.clone() });
        }
    }

    let parameters = stream
        .parameters
        .iter()
        .map(|(name, value)| {
            Element::new("Parameter")
                .attr("name", name)
                .attr("value", value)
        })
        .collect();
    let mut stream_el = Element::new("Stream").attr("url", &stream.url);
    stream_el.attrs.extend(
        [
            ("name", &stream.name),
            ("statusCallback", &stream.status_callback),
            ("statusCallbackMethod", &stream.status_callback_method),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key, value.as_deref()?))),
    );
    stream_el.children = parameters;

    let mut connect = Element::new("Connect").child(stream_el);
    if let Some(action) = connect_action {
        connect = connect.attr("action", action).attr("method", "POST");
    }

    let mut response = Element::new("Response").child(connect);
    if let Some(say) = fallback.say.as_deref().filter(|s| !s.is_empty()) {
        response = response.child(Element::new("Say").text(say));
    }
    if let Some(url) = fallback.redirect_url.as_deref().filter(|s| !s.is_empty()) {
        response = response.child(Element::new("Redirect").text(url));
    }

    let xml = response.to_document();
    if xml.len() > MAX_RESPONSE_BYTES {
        return Err(TwimlError::TooLarge { bytes: xml.len() });
    }
    Ok(xml)
}

/// Escapes an attribute value: `& < > "` as entities, tab, newline and carriage return as
/// character references (so parsers do not normalize them to spaces), and drops characters
/// XML 1.0 does not allow. Borrows when nothing changes.
#[must_use]
pub fn escape_attr(value: &str) -> Cow<'_, str> {
    escape(value, Context::Attribute)
}

/// Escapes element text: `& < >` as entities, carriage return as `&#13;` (so parsers keep
/// it), and drops characters XML 1.0 does not allow. Borrows when nothing changes.
#[must_use]
pub fn escape_text(value: &str) -> Cow<'_, str> {
    escape(value, Context::Text)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    Attribute,
    Text,
}

/// XML 1.0 `Char`: tab, newline, carriage return, and everything from U+0020 except
/// U+FFFE/U+FFFF (Rust `char`s are never surrogates).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && !matches!(c, '\u{FFFE}' | '\u{FFFF}'))
}

fn escape(value: &str, context: Context) -> Cow<'_, str> {
    let needs_work = |c: char| match c {
        '&' | '<' | '>' | '\r' => true,
        '"' | '\n' | '\t' => context == Context::Attribute,
        c => !is_xml_char(c),
    };
    let Some(first) = value.find(needs_work) else {
        return Cow::Borrowed(value);
    };
    let mut out = String::with_capacity(value.len() + 16);
    out.push_str(&value[..first]);
    for c in value[first..].chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            '"' if context == Context::Attribute => out.push_str("&quot;"),
            '\n' if context == Context::Attribute => out.push_str("&#10;"),
            '\t' if context == Context::Attribute => out.push_str("&#9;"),
            c if !is_xml_char(c) => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `<Response><Dial answerOnBridge="true" callerId=… timeout=… action=…><Number>…</Number>
/// </Dial></Response>`: the TwiML a transfer puts on the call with a REST update. The caller
/// keeps hearing ringing until the callee answers. With `action` (an absolute URL: Twilio
/// refuses relative ones in a REST update, 15004) Twilio posts `DialCallStatus` there when the
/// dialled leg ends — busy, no answer and failures included — and runs what it answers;
/// without one the call hangs up (`<Hangup />`). Without `caller_id` Twilio passes the
/// caller's own ID through.
pub fn dial(
    number: &str,
    caller_id: Option<&str>,
    timeout_secs: u32,
    action: Option<&str>,
) -> String {
    let timeout = timeout_secs.to_string();
    let mut dial = Element::new("Dial")
        .attr("answerOnBridge", "true")
        .attr("timeout", &timeout);
    if let Some(id) = caller_id {
        dial = dial.attr("callerId", id);
    }
    if let Some(url) = action {
        dial = dial.attr("action", url).attr("method", "POST");
    }
    let dial = dial.child(Element::new("Number").text(number));
    let response = Element::new("Response").child(dial);
    match action {
        Some(_) => response,
        None => response.child(Element::new("Hangup")),
    }
    .to_document()
}

/// `<Response><Hangup /></Response>`.
pub fn hang_up() -> String {
    Element::new("Response")
        .child(Element::new("Hangup"))
        .to_document()
}

/// `<Response><Say>message</Say><Hangup /></Response>`: the voicemail an outbound call
/// leaves when a machine answered (put on the call with a REST update after the beep).
pub fn say_then_hang_up(message: &str) -> String {
    Element::new("Response")
        .child(Element::new("Say").text(message))
        .child(Element::new("Hangup"))
        .to_document()
}

/// What a caller over the agent plan hears (`AGENT_CONCURRENCY_LIMIT`): with a number, a
/// short line then `<Dial>` to it (people answer); else `message` then `<Hangup/>`.
pub fn overflow(number: Option<&str>, message: &str) -> String {
    match number {
        Some(number) => Element::new("Response")
            .child(Element::new("Say").text(OVERFLOW_HOLD))
            .child(
                Element::new("Dial")
                    .attr("answerOnBridge", "true")
                    .child(Element::new("Number").text(number)),
            )
            .to_document(),
        None => say_then_hang_up(message),
    }
}

/// The line before an overflow `<Dial>`.
pub const OVERFLOW_HOLD: &str = "Please hold while we connect you.";

/// A TwiML element; serialized like Python's `ElementTree` as the helper library uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Element<'a> {
    name: &'static str,
    /// Written sorted by name, whatever the insertion order.
    attrs: Vec<(&'static str, &'a str)>,
    text: Option<&'a str>,
    children: Vec<Element<'a>>,
}

impl<'a> Element<'a> {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            attrs: Vec::new(),
            text: None,
            children: Vec::new(),
        }
    }

    fn attr(mut self, name: &'static str, value: &'a str) -> Self {
        self.attrs.push((name, value));
        self
    }

    fn text(mut self, text: &'a str) -> Self {
        self.text = Some(text);
        self
    }

    fn child(mut self, child: Element<'a>) -> Self {
        self.children.push(child);
        self
    }

    /// The element as a complete document with the XML declaration.
    fn to_document(&self) -> String {
        let mut out = String::with_capacity(256);
        out.push_str(XML_DECLARATION);
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        out.push('<');
        out.push_str(self.name);
        let mut attrs = self.attrs.clone();
        attrs.sort_by_key(|(name, _)| *name);
        for (name, value) in attrs {
            out.push(' ');
            out.push_str(name);
            out.push_str("=\"");
            out.push_str(&escape_attr(value));
            out.push('"');
        }
        let text = self.text.unwrap_or_default();
        if text.is_empty() && self.children.is_empty() {
            out.push_str(" />");
            return;
        }
        out.push('>');
        out.push_str(&escape_text(text));
        for child in &self.children {
            child.write(out);
        }
        out.push_str("</");
        out.push_str(self.name);
        out.push('>');
    }
}

#[cfg(test)]
mod tests;
