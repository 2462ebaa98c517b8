//! CSV and TSV: the rows as one table, the first row its header (repeated with every chunk of
//! rows). The delimiter is whichever of `,`, `;`, tab and `|` splits the first lines most
//! consistently.

use super::builder::{Builder, Built};

/// Most rows read; later rows are dropped (the extracted-text limit would refuse them anyway).
const MAX_ROWS: usize = 1_000_000;

/// Reads `text` as delimited rows.
pub fn extract(text: &str) -> Built {
    let delimiter = sniff(text);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let rows: Vec<Vec<String>> = reader
        .records()
        .take(MAX_ROWS)
        .filter_map(Result::ok)
        .map(|r| r.iter().map(str::to_owned).collect())
        .collect();
    let mut b = Builder::new();
    b.table(None, &rows, true);
    b.finish()
}

/// The delimiter giving the same (more than one) field count on most of the first lines.
fn sniff(text: &str) -> u8 {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(20)
        .collect();
    let mut best = (b',', 0usize);
    for d in [b',', b'\t', b';', b'|'] {
        let counts: Vec<usize> = lines.iter().map(|l| l.matches(d as char).count()).collect();
        let Some(&first) = counts.first() else {
            continue;
        };
        if first == 0 {
            continue;
        }
        let agree = counts.iter().filter(|&&c| c == first).count();
        if agree > best.1 {
            best = (d, agree);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_a_table_with_a_header() {
        let built = extract("name;value\n\"Smith; J\";3\nDoe;4\n");
        let t = &built.tables[0];
        assert_eq!(
            &built.text[t.start..t.body],
            "| name | value |\n| --- | --- |\n"
        );
        assert_eq!(&built.text[t.body..t.end], "| Smith; J | 3 |\n| Doe | 4 |");
        assert_eq!(sniff("a\tb\n1\t2"), b'\t');
    }
}
