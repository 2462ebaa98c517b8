//! A flat view of an XML part: element opened (local name, attributes), closed, text. Entity
//! references resolve only to the five predefined entities and character references; anything
//! a DTD would define stays unexpanded (so a billion-laughs part cannot grow), and the DTD
//! itself is ignored.

use quick_xml::events::Event as Raw;
use quick_xml::Reader;

use super::IngestError;

/// An element's local name and attributes (names as written, prefix included).
#[derive(Debug)]
pub struct Tag {
    /// Local name, without its namespace prefix.
    pub name: String,
    attrs: Vec<(String, String)>,
}

impl Tag {
    /// The value of the attribute named `name` exactly (`r:id`), or else of the first whose
    /// local name is `name` (`val` finds `w:val`).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .or_else(|| {
                self.attrs
                    .iter()
                    .find(|(k, _)| k.rsplit(':').next() == Some(name))
            })
            .map(|(_, v)| v.as_str())
    }
}

/// One step through the part.
#[derive(Debug)]
pub enum Event<'a> {
    /// An element starts (an empty element is an `Open` followed by its `Close`).
    Open(&'a Tag),
    /// An element ends (its local name).
    Close(&'a str),
    /// Character data.
    Text(&'a str),
}

fn local(name: &str) -> String {
    name.rsplit(':').next().unwrap_or_default().to_owned()
}

/// Calls `f` for every element and text of `xml`. A syntax error is a malformed `kind`.
pub fn walk(
    xml: &str,
    kind: &'static str,
    mut f: impl FnMut(Event<'_>),
) -> Result<(), IngestError> {
    let mut reader = Reader::from_str(xml);
    let malformed = |e: String| IngestError::Malformed { kind, detail: e };
    loop {
        match reader.read_event() {
            Ok(ev @ (Raw::Start(_) | Raw::Empty(_))) => {
                let (Raw::Start(e) | Raw::Empty(e)) = &ev else {
                    continue;
                };
                let tag = Tag {
                    name: local(e.name().as_ref()),
                    attrs: e
                        .attributes()
                        .flatten()
                        .map(|a| {
                            let key = a.key.as_ref().to_owned();
                            let value = a
                                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                                .map(|v| v.into_owned())
                                .unwrap_or_else(|_| a.value.clone().into_owned());
                            (key, value)
                        })
                        .collect(),
                };
                f(Event::Open(&tag));
                if matches!(ev, Raw::Empty(_)) {
                    f(Event::Close(&tag.name));
                }
            }
            Ok(Raw::End(e)) => f(Event::Close(&local(e.name().as_ref()))),
            Ok(Raw::Text(t)) => f(Event::Text(&t.xml10_content())),
            Ok(Raw::CData(t)) => f(Event::Text(&t.xml10_content())),
            Ok(Raw::GeneralRef(r)) => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    f(Event::Text(c.encode_utf8(&mut [0; 4])));
                } else if let Some(s) =
                    quick_xml::escape::resolve_predefined_entity(&r.xml10_content())
                {
                    f(Event::Text(s));
                }
            }
            Ok(Raw::Eof) => return Ok(()),
            Ok(_) => {}
            Err(e) => {
                return Err(malformed(format!(
                    "XML error at byte {}: {e}",
                    reader.error_position()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(xml: &str) -> Vec<String> {
        let mut out = Vec::new();
        walk(xml, "XML", |e| {
            out.push(match e {
                Event::Open(t) => format!(
                    "<{}{}>",
                    t.name,
                    t.attr("val").map(|v| format!(" {v}")).unwrap_or_default()
                ),
                Event::Close(n) => format!("</{n}>"),
                Event::Text(t) => t.to_owned(),
            })
        })
        .expect("walk");
        out
    }

    #[test]
    fn entities_resolve_only_when_predefined() {
        let laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><w:t w:val="a&amp;b">x &lt; y &#233; &lol2;</w:t>"#;
        let out = flat(laughs).concat();
        assert_eq!(out, "<t a&b>x < y é </t>");
    }

    #[test]
    fn empty_elements_open_and_close() {
        assert_eq!(
            flat("<p><br/>a</p>"),
            vec!["<p>", "<br>", "</br>", "a", "</p>"]
        );
    }
}
