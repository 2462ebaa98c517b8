//! RTF: the visible text of a Rich Text Format document. Control words are dropped, except
//! those that stand for text (`\par`, `\tab`, `\'hh`, `\uN`); destinations that hold no body
//! text (font and colour tables, pictures, `\*` groups, headers' metadata) are skipped.
//!
//! One linear pass with an explicit group stack: no recursion, so no nesting depth can
//! exhaust the stack.

/// Destinations whose content is not part of the document's text.
const SKIPPED: &[&str] = &[
    "fonttbl",
    "colortbl",
    "stylesheet",
    "info",
    "pict",
    "object",
    "header",
    "footer",
    "headerl",
    "headerr",
    "footerl",
    "footerr",
    "listtable",
    "listoverridetable",
    "rsidtbl",
    "generator",
    "themedata",
    "colorschememapping",
    "latentstyles",
    "datastore",
    "xmlnstbl",
    "fldinst",
    "bkmkstart",
    "bkmkend",
];

/// The plain text of an RTF document.
pub fn to_text(rtf: &str) -> String {
    let bytes = rtf.as_bytes();
    let mut out = String::with_capacity(rtf.len() / 2);
    // Per open group: whether its content is skipped, and how many characters follow a `\uN`.
    let mut stack: Vec<(bool, usize)> = vec![(false, 1)];
    let mut pending_skip = 0usize;
    let mut raw: Vec<u8> = Vec::new();
    let mut i = 0;
    let flush = |raw: &mut Vec<u8>, out: &mut String| {
        if !raw.is_empty() {
            // `\'hh` escapes are in the document's code page; Windows-1252 is RTF's default.
            let (text, _, _) = encoding_rs::WINDOWS_1252.decode(raw);
            out.push_str(&text);
            raw.clear();
        }
    };
    while i < bytes.len() {
        let skipping = stack.last().is_some_and(|s| s.0);
        match bytes[i] {
            b'{' => {
                flush(&mut raw, &mut out);
                let (skip, uc) = stack.last().copied().unwrap_or((false, 1));
                let starred = bytes.get(i + 1..i + 3) == Some(b"\\*");
                stack.push((skip || starred, uc));
                i += 1;
            }
            b'}' => {
                flush(&mut raw, &mut out);
                if stack.len() > 1 {
                    stack.pop();
                }
                i += 1;
            }
            b'\\' => {
                let (word, param, next) = control(bytes, i + 1);
                i = next;
                if pending_skip > 0 && word != "'" {
                    pending_skip = 0;
                }
                if word == "'" {
                    if let Some(b) = bytes
                        .get(i..i + 2)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        i += 2;
                        if pending_skip > 0 {
                            pending_skip -= 1;
                        } else if !skipping {
                            raw.push(b);
                        }
                    }
                    continue;
                }
                if skipping {
                    continue;
                }
                if SKIPPED.contains(&word.as_str()) {
                    if let Some(top) = stack.last_mut() {
                        top.0 = true;
                    }
                    continue;
                }
                flush(&mut raw, &mut out);
                match word.as_str() {
                    "par" | "line" | "sect" | "page" | "row" => out.push('\n'),
                    "tab" | "cell" => out.push('\t'),
                    "emdash" => out.push('—'),
                    "endash" => out.push('–'),
                    "bullet" => out.push('•'),
                    "lquote" => out.push('‘'),
                    "rquote" => out.push('’'),
                    "ldblquote" => out.push('“'),
                    "rdblquote" => out.push('”'),
                    "uc" => {
                        if let Some(top) = stack.last_mut() {
                            top.1 = param.unwrap_or(1).max(0) as usize;
                        }
                    }
                    "u" => {
                        let code = param.unwrap_or(0);
                        let code = if code < 0 { code + 65_536 } else { code } as u32;
                        out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                        pending_skip = stack.last().map_or(1, |s| s.1);
                        // The fallback character(s) after `\uN` are plain text, not escapes.
                        while pending_skip > 0
                            && i < bytes.len()
                            && !matches!(bytes[i], b'\\' | b'{' | b'}')
                        {
                            i += 1;
                            pending_skip -= 1;
                        }
                    }
                    "\\" | "{" | "}" => out.push_str(&word),
                    "~" => out.push('\u{a0}'),
                    _ => {}
                }
            }
            b'\r' | b'\n' => i += 1,
            b => {
                if !skipping {
                    raw.push(b);
                }
                i += 1;
            }
        }
    }
    flush(&mut raw, &mut out);
    out.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

/// The control word starting at `i` (after the backslash), its numeric parameter, and where
/// the text after it begins (a single space delimiter is consumed).
fn control(bytes: &[u8], mut i: usize) -> (String, Option<i64>, usize) {
    let Some(&first) = bytes.get(i) else {
        return (String::new(), None, i);
    };
    if !first.is_ascii_alphabetic() {
        return ((first as char).to_string(), None, i + 1);
    }
    let start = i;
    while i < bytes.len() && bytes[i].is_ascii_alphabetic() && i - start < 32 {
        i += 1;
    }
    let word = String::from_utf8_lossy(&bytes[start..i]).into_owned();
    let num_start = i;
    if bytes.get(i) == Some(&b'-') {
        i += 1;
    }
    while i < bytes.len() && bytes[i].is_ascii_digit() && i - num_start < 10 {
        i += 1;
    }
    let param = std::str::from_utf8(&bytes[num_start..i])
        .ok()
        .and_then(|s| s.parse().ok());
    if bytes.get(i) == Some(&b' ') {
        i += 1;
    }
    (word, param, i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_text_only() {
        let rtf = r"{\rtf1\ansi\deff0{\fonttbl{\f0 Times;}}{\colortbl;\red0\green0\blue0;}
{\*\generator Writer;}\pard\b Heading\b0\par
Caf\'e9 costs 3\tab euros \u8364? today.\par
{\pict\pngblip 89504e47}Done\}\par}";
        assert_eq!(to_text(rtf), "Heading\nCafé costs 3\teuros € today.\nDone}");
    }

    #[test]
    fn deep_nesting_is_linear() {
        let rtf = format!("{{\\rtf1 {}x{}}}", "{".repeat(100_000), "}".repeat(100_000));
        assert_eq!(to_text(&rtf), "x");
    }
}
