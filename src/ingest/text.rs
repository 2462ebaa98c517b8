//! Decoding bytes into text: byte-order marks honoured, invalid UTF-8 replaced and reported.

/// Decodes `bytes` to a `String`. Returns the text and a warning when bytes had to be replaced.
pub fn decode(bytes: &[u8]) -> (String, Option<String>) {
    if let Some((encoding, bom_len)) = encoding_rs::Encoding::for_bom(bytes) {
        let (text, had_errors) = encoding.decode_without_bom_handling(&bytes[bom_len..]);
        let warning = had_errors.then(|| format!("invalid {} sequences replaced", encoding.name()));
        return (text.into_owned(), warning);
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_owned(), None),
        Err(_) => {
            let text = String::from_utf8_lossy(bytes).into_owned();
            let bad = text.matches('\u{FFFD}').count();
            (
                text,
                Some(format!(
                    "invalid UTF-8: {bad} sequence(s) replaced with U+FFFD"
                )),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_is_replaced_and_reported() {
        let (text, warn) = decode(b"caf\xC3\xA9 and \xFF\xFE bad");
        assert!(text.starts_with("café and "));
        assert!(warn.expect("warning").contains("2 sequence"));
    }

    #[test]
    fn bom_selects_encoding() {
        let (text, warn) = decode(b"\xEF\xBB\xBFhello");
        assert_eq!(text, "hello");
        assert!(warn.is_none());
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("héllo".encode_utf16().flat_map(|u| u.to_le_bytes()))
            .collect();
        assert_eq!(decode(&utf16).0, "héllo");
    }
}
