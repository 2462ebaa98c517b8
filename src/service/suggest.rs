//! Suggested questions for a knowledge base: made from its documents' section headings (the
//! names people gave the parts of what they wrote), spread over the documents, or from the
//! documents' names when they have no headings. Deterministic and free: no model call.
//! It must never invent a topic the knowledge base does not have.

use crate::store::{DocumentQuery, DocumentStatus, Heading, Scope};

use super::{Principal, Result, Service};

/// One suggested question and where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    /// The question.
    pub question: String,
    /// The document it is about.
    pub document_name: String,
    /// The heading it was made from (`None`: from the document's name).
    pub heading: Option<String>,
}

/// Headings that name a part of every document rather than a topic.
const GENERIC: &[&str] = &[
    "abstract",
    "acknowledgements",
    "acknowledgments",
    "appendix",
    "bibliography",
    "contents",
    "index",
    "notes",
    "overview",
    "references",
    "see also",
    "summary",
    "table of contents",
    "toc",
];

/// A heading as a topic: numbering ("2.1", "Chapter 3:", "IV.") and trailing punctuation
/// removed; `None` when nothing worth asking about is left.
fn topic(heading: &str) -> Option<String> {
    let mut t = heading.trim();
    let lower = t.to_ascii_lowercase();
    for prefix in ["chapter ", "section ", "part "] {
        if lower.starts_with(prefix) {
            t = &t[prefix.len()..];
            break;
        }
    }
    // "2.1.3 ", "IV. ", "3) ", "A: "
    let numbering = t
        .find(|c: char| c.is_whitespace())
        .map(|i| &t[..i])
        .filter(|w| {
            let w = w.trim_end_matches(['.', ')', ':']);
            !w.is_empty()
                && (w.chars().all(|c| c.is_ascii_digit() || c == '.')
                    || w.chars().all(|c| "IVXLC".contains(c)))
        });
    if let Some(n) = numbering {
        t = t[n.len()..].trim_start();
    } else if t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let t = t.trim_end_matches([':', '.', ';', ',', '-', '—']).trim();
    let letters = t.chars().filter(|c| c.is_alphabetic()).count();
    if letters < 3 || t.chars().count() > 80 || GENERIC.contains(&t.to_lowercase().as_str()) {
        return None;
    }
    Some(t.to_owned())
}

/// A document's name as a title: its extension dropped, `_` and `-` as spaces.
fn title(name: &str) -> String {
    let stem = match name.rsplit_once('.') {
        Some((s, ext)) if !s.is_empty() && ext.len() <= 5 => s,
        _ => name,
    };
    stem.replace(['_', '-'], " ").trim().to_owned()
}

/// Up to `n` questions from `headings` (in document order): the heading of each leaf section
/// as its topic — a heading with subsections is a document's title or a chapter, too broad
/// for the passages to answer — one document at a time in turn so that every document is
/// asked about before any is asked about twice; a topic asked once is not asked again.
pub fn from_headings(headings: &[Heading], n: usize) -> Vec<Suggestion> {
    let has_subsections = |h: &Heading| {
        headings.iter().any(|o| {
            o.document_name == h.document_name
                && o.path.len() > h.path.len()
                && o.path.starts_with(&h.path)
                && o.path.last().and_then(|l| topic(l)).is_some()
        })
    };
    let mut per_doc: Vec<(String, Vec<String>)> = Vec::new();
    for h in headings {
        if has_subsections(h) {
            continue;
        }
        let Some(t) = h.path.last().and_then(|l| topic(l)) else {
            continue;
        };
        match per_doc.iter_mut().find(|(d, _)| *d == h.document_name) {
            Some((_, topics)) => topics.push(t),
            None => per_doc.push((h.document_name.clone(), vec![t])),
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut round = 0;
    while out.len() < n && per_doc.iter().any(|(_, t)| t.len() > round) {
        for (doc, topics) in &per_doc {
            let Some(t) = topics.get(round) else { continue };
            if out.len() == n || !seen.insert(t.to_lowercase()) {
                continue;
            }
            let question = if t.ends_with('?') {
                t.clone()
            } else {
                format!("What do the documents say about {t}?")
            };
            out.push(Suggestion {
                question,
                document_name: doc.clone(),
                heading: Some(t.clone()),
            });
        }
        round += 1;
    }
    out
}

impl Service {
    /// Up to `n` (1..=20) suggested questions about knowledge base `kb`.
    pub fn suggestions(&self, p: &Principal, kb: &str, n: usize) -> Result<Vec<Suggestion>> {
        p.require(Scope::Read)?;
        let kb = self.kb(p, kb)?;
        let n = n.clamp(1, 20);
        let headings = self.core.store.kb_headings(&kb.id, 500)?;
        let mut out = from_headings(&headings, n);
        if out.len() < n {
            // Documents without headings (plain text, many PDFs): ask about them by name.
            let asked: Vec<String> = out.iter().map(|s| s.document_name.clone()).collect();
            let docs = self.core.store.list_documents(
                &kb.id,
                &DocumentQuery {
                    status: Some(DocumentStatus::Ready),
                    stale: false,
                    offset: 0,
                    limit: 50,
                },
            )?;
            for d in docs.items {
                if out.len() == n {
                    break;
                }
                let t = title(&d.name);
                if asked.contains(&d.name) || t.chars().filter(|c| c.is_alphabetic()).count() < 3 {
                    continue;
                }
                out.push(Suggestion {
                    question: format!("What is in {t}?"),
                    document_name: d.name,
                    heading: None,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(doc: &str, path: &[&str]) -> Heading {
        Heading {
            document_name: doc.into(),
            path: path.iter().map(|s| s.to_string()).collect(),
            chunks: 1,
        }
    }

    #[test]
    fn topics_drop_numbering_and_generic_parts() {
        assert_eq!(
            topic("2.1 Nightly backups").as_deref(),
            Some("Nightly backups")
        );
        assert_eq!(topic("Chapter 3: Ownership").as_deref(), Some("Ownership"));
        assert_eq!(topic("IV. Results").as_deref(), Some("Results"));
        assert_eq!(topic("Installation:").as_deref(), Some("Installation"));
        assert_eq!(topic("Table of Contents"), None);
        assert_eq!(topic("3.2"), None);
        assert_eq!(topic("A"), None);
        assert_eq!(topic("Is it safe?").as_deref(), Some("Is it safe?"));
        assert_eq!(topic(&"x".repeat(81)), None);
        // Words that merely start with roman numerals are kept.
        assert_eq!(
            topic("Civil engineering").as_deref(),
            Some("Civil engineering")
        );
    }

    #[test]
    fn questions_take_every_document_in_turn_and_never_repeat_a_topic() {
        let hs = [
            h("ops.md", &["Operations"]),
            h("ops.md", &["Operations", "Backups"]),
            h("ops.md", &["Operations", "Restores"]),
            h("hr.md", &["Holidays"]),
            h("hr.md", &["Holidays", "Contents"]),
            h("faq.md", &["backups"]),
            h("faq.md", &["How do I reset a password?"]),
        ];
        let got = from_headings(&hs, 5);
        let q: Vec<&str> = got.iter().map(|s| s.question.as_str()).collect();
        // "Operations" has subsections (not asked); hr.md's "Holidays" has only a generic
        // one ("Contents"), so it is asked; "backups" of faq.md is "Backups" of ops.md
        // again: skipped.
        assert_eq!(
            q,
            [
                "What do the documents say about Backups?",
                "What do the documents say about Holidays?",
                "What do the documents say about Restores?",
                "How do I reset a password?",
            ]
        );
        assert_eq!(got[1].document_name, "hr.md");
        assert_eq!(got[1].heading.as_deref(), Some("Holidays"));
        assert_eq!(from_headings(&hs, 2).len(), 2);
        // A document of one heading: that heading is its leaf.
        assert_eq!(from_headings(&[h("a.md", &["Billing"])], 4).len(), 1);
        assert!(from_headings(&[], 4).is_empty());
    }

    #[test]
    fn titles_come_from_file_names() {
        assert_eq!(title("release_notes-2024.md"), "release notes 2024");
        assert_eq!(title("README"), "README");
        assert_eq!(title(".env"), ".env");
    }
}
