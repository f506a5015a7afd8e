//! A small XML element tree with a writer, used to build libvirt domain XML from typed
//! structs, and a reader for the attributes of one element (our own metadata element as
//! libvirt hands it back).
//!
//! The writer escapes every attribute value and text node and refuses characters that
//! XML 1.0 cannot carry (NUL and most control characters), so no caller can inject markup
//! through a VM name, a path or a kernel command line. It must never format a value into
//! markup by string pasting.

use std::fmt::Write as _;

/// Why a tree could not be written as XML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("{context} contains the character {ch:?}, which XML cannot carry")]
    InvalidChar { context: String, ch: char },
}

/// One XML element: a name, attributes in the order given, then children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    name: &'static str,
    attrs: Vec<(&'static str, String)>,
    children: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    pub fn new(name: &'static str) -> Self {
        Element {
            name,
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    pub fn attr(mut self, key: &'static str, value: impl ToString) -> Self {
        self.attrs.push((key, value.to_string()));
        self
    }

    pub fn attr_opt<T: ToString>(self, key: &'static str, value: Option<T>) -> Self {
        match value {
            Some(v) => self.attr(key, v),
            None => self,
        }
    }

    pub fn child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    pub fn child_opt(self, child: Option<Element>) -> Self {
        match child {
            Some(c) => self.child(c),
            None => self,
        }
    }

    pub fn children(mut self, children: impl IntoIterator<Item = Element>) -> Self {
        self.children
            .extend(children.into_iter().map(Node::Element));
        self
    }

    pub fn text(mut self, text: impl ToString) -> Self {
        self.children.push(Node::Text(text.to_string()));
        self
    }

    /// `<name>text</name>`: the common leaf.
    pub fn leaf(name: &'static str, text: impl ToString) -> Self {
        Element::new(name).text(text)
    }

    /// Writes the tree indented by two spaces per level, attributes in single quotes as
    /// libvirt writes them, elements without children self-closed. Elements holding only
    /// text stay on one line.
    pub fn render(&self) -> Result<String, XmlError> {
        let mut out = String::new();
        self.write(&mut out, 0)?;
        Ok(out)
    }

    fn write(&self, out: &mut String, depth: usize) -> Result<(), XmlError> {
        let indent = "  ".repeat(depth);
        out.push_str(&indent);
        out.push('<');
        out.push_str(self.name);
        for (key, value) in &self.attrs {
            let context = format!("attribute {key} of <{}>", self.name);
            let _ = write!(out, " {key}='{}'", escape(value, &context)?);
        }
        if self.children.is_empty() {
            out.push_str("/>\n");
            return Ok(());
        }
        out.push('>');
        let text_only = self.children.iter().all(|c| matches!(c, Node::Text(_)));
        if text_only {
            for child in &self.children {
                if let Node::Text(t) = child {
                    out.push_str(&escape(t, &format!("text of <{}>", self.name))?);
                }
            }
        } else {
            out.push('\n');
            for child in &self.children {
                match child {
                    Node::Element(e) => e.write(out, depth + 1)?,
                    Node::Text(t) => {
                        out.push_str(&indent);
                        out.push_str("  ");
                        out.push_str(&escape(t, &format!("text of <{}>", self.name))?);
                        out.push('\n');
                    }
                }
            }
            out.push_str(&indent);
        }
        let _ = writeln!(out, "</{}>", self.name);
        Ok(())
    }
}

/// Escapes text for use in an attribute (single or double quoted) or as element text.
fn escape(s: &str, context: &str) -> Result<String, XmlError> {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            // Allowed by XML 1.0 but an attribute value normalises them to spaces: keep
            // them exact as character references.
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {
                return Err(XmlError::InvalidChar {
                    context: context.to_string(),
                    ch: c,
                })
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The value of attribute `name` on the first element of `xml`, unescaped.
///
/// Meant for the single element libvirt returns from `virDomainGetMetadata`; it reads only
/// the first start tag and never panics, whatever the input.
pub fn first_element_attr(xml: &str, name: &str) -> Option<String> {
    let start = xml.find('<')?;
    let rest = xml.get(start + 1..)?;
    // Skip the element name.
    let after_name = rest.find(|c: char| c.is_whitespace() || c == '>' || c == '/')?;
    let mut s = rest.get(after_name..)?;
    loop {
        s = s.trim_start();
        if s.is_empty() || s.starts_with('>') || s.starts_with('/') {
            return None;
        }
        let eq = s.find('=')?;
        let key = s.get(..eq)?.trim();
        let value_part = s.get(eq + 1..)?.trim_start();
        let quote = value_part.chars().next()?;
        if quote != '\'' && quote != '"' {
            return None;
        }
        let body = value_part.get(1..)?;
        let end = body.find(quote)?;
        let raw = body.get(..end)?;
        if key == name {
            return Some(unescape(raw));
        }
        s = body.get(end + 1..)?;
    }
}

/// Resolves the predefined entities and numeric character references; anything else is
/// kept as written.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(rest.get(..amp).unwrap_or_default());
        let tail = rest.get(amp..).unwrap_or_default();
        let semi = tail.find(';').filter(|&i| i <= 12);
        let decoded = semi.and_then(|i| tail.get(1..i)).and_then(decode_entity);
        match (semi, decoded) {
            (Some(i), Some(ch)) => {
                out.push(ch);
                rest = tail.get(i + 1..).unwrap_or_default();
            }
            _ => {
                out.push('&');
                rest = tail.get(1..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_entity(entity: &str) -> Option<char> {
    match entity {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => {
            let num = entity.strip_prefix('#')?;
            let code = match num.strip_prefix('x').or_else(|| num.strip_prefix('X')) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse::<u32>().ok()?,
            };
            char::from_u32(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn renders_nested_tree() {
        let xml = Element::new("a")
            .attr("x", "1")
            .child(Element::leaf("b", "text"))
            .child(Element::new("c").attr("y", "it's <&>"))
            .render()
            .unwrap();
        assert_eq!(
            xml,
            "<a x='1'>\n  <b>text</b>\n  <c y='it&apos;s &lt;&amp;&gt;'/>\n</a>\n"
        );
    }

    #[test]
    fn refuses_control_characters() {
        let err = Element::leaf("cmdline", "a\u{1}b").render().unwrap_err();
        assert_eq!(
            err,
            XmlError::InvalidChar {
                context: "text of <cmdline>".into(),
                ch: '\u{1}'
            }
        );
        assert!(Element::new("x").attr("k", "\0").render().is_err());
    }

    #[test]
    fn reads_attributes_back() {
        let xml =
            "<platter:vm xmlns:platter=\"urn:x\" accel=\"tcg\" console-log='/a&amp;b&#39;c'/>";
        assert_eq!(first_element_attr(xml, "accel").as_deref(), Some("tcg"));
        assert_eq!(
            first_element_attr(xml, "console-log").as_deref(),
            Some("/a&b'c")
        );
        assert_eq!(first_element_attr(xml, "missing"), None);
        assert_eq!(first_element_attr("<a b=c/>", "b"), None);
        assert_eq!(first_element_attr("", "b"), None);
    }

    proptest! {
        #[test]
        fn attribute_values_round_trip(value in "\\PC*") {
            let xml = Element::new("m").attr("v", &value).render().unwrap();
            prop_assert_eq!(first_element_attr(&xml, "v"), Some(value));
        }

        #[test]
        fn reader_never_panics(input in "\\PC*", name in "[a-z-]{1,8}") {
            let _ = first_element_attr(&input, &name);
        }

        #[test]
        fn reader_never_panics_on_tag_soup(input in "[<>='\"a-c &;#x0-9/ ]{0,64}") {
            let _ = first_element_attr(&input, "a");
        }
    }
}
