//! Tables in PDF pages, recognised from word positions (poppler's `pdftotext -tsv`): words are
//! grouped into rows by their vertical position, rows into cells at wide horizontal gaps, and a
//! run of rows with the same number of short cells, aligned in columns, is a table. A page
//! holding one is rewritten top to bottom with the table as pipe rows (its first row the
//! header), so the chunker keeps its rows whole and repeats the header.
//!
//! Deliberately conservative: at least 3 rows of at least 2 cells, cells short (a two-column
//! article has the geometry of a 2-column table but long cells), left edges aligned. Pure: no
//! I/O; must never decide anything about pages it finds no table on.

use super::builder::{write_table, Table};

/// A word and its box, in points from the page's top left.
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    /// Left edge.
    pub left: f32,
    /// Top edge.
    pub top: f32,
    /// Width.
    pub width: f32,
    /// Height.
    pub height: f32,
    /// The word.
    pub text: String,
}

/// Fewest rows (header included) a table needs.
const MIN_ROWS: usize = 3;
/// Longest median cell, in characters, of a table (longer cells are columns of prose).
const MAX_MEDIAN_CELL: usize = 24;

/// Reads `pdftotext -tsv` output into the words of each page (1-based `page_num`, in order).
pub fn parse_tsv(tsv: &str, pages: usize) -> Vec<Vec<Word>> {
    let mut out: Vec<Vec<Word>> = vec![Vec::new(); pages];
    for line in tsv.lines().skip(1) {
        let cols: Vec<&str> = line.splitn(12, '\t').collect();
        if cols.len() < 12 || cols[0] != "5" {
            continue;
        }
        let num = |i: usize| cols[i].parse::<f32>().ok();
        let (Some(page), Some(left), Some(top), Some(width), Some(height)) = (
            cols[1].parse::<usize>().ok(),
            num(6),
            num(7),
            num(8),
            num(9),
        ) else {
            continue;
        };
        let text = cols[11].trim();
        if text.is_empty() || page == 0 || page > pages {
            continue;
        }
        out[page - 1].push(Word {
            left,
            top,
            width,
            height,
            text: text.to_owned(),
        });
    }
    out
}

/// A row of a page: its top, the height of its words, and its cells (each cell's left edge
/// and text).
#[derive(Debug)]
struct Row {
    top: f32,
    height: f32,
    cells: Vec<(f32, String)>,
}

fn rows_of(words: &[Word]) -> Vec<Row> {
    let mut sorted: Vec<&Word> = words.iter().filter(|w| w.height > 0.0).collect();
    sorted.sort_by(|a, b| a.top.total_cmp(&b.top).then(a.left.total_cmp(&b.left)));
    let mut lines: Vec<Vec<&Word>> = Vec::new();
    for w in sorted {
        match lines.last_mut() {
            Some(line) if (w.top - line[0].top).abs() <= line[0].height * 0.5 => line.push(w),
            _ => lines.push(vec![w]),
        }
    }
    lines
        .into_iter()
        .map(|mut line| {
            let top = line[0].top;
            line.sort_by(|a, b| a.left.total_cmp(&b.left));
            let height = line.iter().map(|w| w.height).fold(0.0, f32::max);
            let mut cells: Vec<(f32, String, f32)> = Vec::new();
            for w in line {
                match cells.last_mut() {
                    // A gap under one line height is a space between words.
                    Some((_, text, right)) if w.left - *right < height => {
                        text.push(' ');
                        text.push_str(&w.text);
                        *right = w.left + w.width;
                    }
                    _ => cells.push((w.left, w.text.clone(), w.left + w.width)),
                }
            }
            Row {
                top,
                height,
                cells: cells.into_iter().map(|(l, t, _)| (l, t)).collect(),
            }
        })
        .collect()
}

/// Whether rows `rows` (same cell count) line up as a table: short cells, and each column's
/// left edges within two line heights of each other.
fn is_table(rows: &[&Row]) -> bool {
    let n = rows[0].cells.len();
    if rows.len() < MIN_ROWS || n < 2 {
        return false;
    }
    let mut lengths: Vec<usize> = rows
        .iter()
        .flat_map(|r| r.cells.iter().map(|(_, t)| t.chars().count()))
        .collect();
    lengths.sort_unstable();
    if lengths[lengths.len() / 2] > MAX_MEDIAN_CELL {
        return false;
    }
    let tolerance = rows.iter().map(|r| r.height).fold(0.0, f32::max) * 2.0;
    (0..n).all(|c| {
        let lefts: Vec<f32> = rows.iter().map(|r| r.cells[c].0).collect();
        let min = lefts.iter().copied().fold(f32::MAX, f32::min);
        let max = lefts.iter().copied().fold(f32::MIN, f32::max);
        // Right-aligned numbers start at different x: accept when the column stays clear
        // of its neighbours instead.
        max - min <= tolerance
            || rows.iter().all(|r| {
                r.cells.get(c + 1).is_none_or(|next| next.0 > max)
                    && (c == 0 || r.cells[c - 1].0 < min)
            })
    })
}

/// The page rewritten with its tables as pipe rows, when it holds at least one table; `None`
/// when it holds none (its text is then left as the engines read it).
pub fn page_with_tables(words: &[Word]) -> Option<(String, Vec<Table>)> {
    let rows = rows_of(words);
    // Runs of consecutive, closely spaced rows with the same number of cells.
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let n = rows[i].cells.len();
        let mut j = i + 1;
        while j < rows.len()
            && rows[j].cells.len() == n
            && rows[j].top - rows[j - 1].top <= rows[j - 1].height * 3.0
        {
            j += 1;
        }
        let run: Vec<&Row> = rows[i..j].iter().collect();
        if n >= 2 && is_table(&run) {
            spans.push((i, j));
            i = j;
        } else {
            i += 1;
        }
    }
    if spans.is_empty() {
        return None;
    }
    let mut text = String::new();
    let mut tables = Vec::new();
    let mut k = 0;
    let mut last: Option<&Row> = None;
    let block = |text: &mut String| {
        if !text.is_empty() {
            while !text.ends_with("\n\n") {
                text.push('\n');
            }
        }
    };
    while k < rows.len() {
        if let Some(&(s, e)) = spans.iter().find(|(s, _)| *s == k) {
            block(&mut text);
            let cells: Vec<Vec<String>> = rows[s..e]
                .iter()
                .map(|r| r.cells.iter().map(|(_, t)| t.clone()).collect())
                .collect();
            if let Some(t) = write_table(&mut text, None, &cells, true) {
                tables.push(t);
            }
            block(&mut text);
            last = None;
            k = e;
            continue;
        }
        let row = &rows[k];
        match last {
            Some(prev) if row.top - prev.top <= prev.height * 1.6 => text.push('\n'),
            Some(_) => block(&mut text),
            None => {}
        }
        let line: Vec<&str> = row.cells.iter().map(|(_, t)| t.as_str()).collect();
        text.push_str(&line.join(" "));
        last = Some(row);
        k += 1;
    }
    Some((text.trim_end().to_owned(), tables))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(left: f32, top: f32, text: &str) -> Word {
        Word {
            left,
            top,
            width: text.len() as f32 * 5.0,
            height: 10.0,
            text: text.to_owned(),
        }
    }

    /// Words of a line of text starting at `left`, 5 pt per character, one space between.
    fn line(left: f32, top: f32, text: &str) -> Vec<Word> {
        let mut x = left;
        text.split(' ')
            .map(|t| {
                let w = word(x, top, t);
                x += w.width + 3.0;
                w
            })
            .collect()
    }

    #[test]
    fn an_aligned_grid_of_short_cells_is_a_table() {
        let mut words = line(50.0, 50.0, "Quarterly sales by region");
        for (i, (a, b, c)) in [
            ("Region", "Units", "Revenue"),
            ("North", "120", "4.2 M"),
            ("South", "95", "3.1 M"),
            ("East", "7", "0.2 M"),
        ]
        .iter()
        .enumerate()
        {
            let top = 80.0 + i as f32 * 14.0;
            words.extend(line(50.0, top, a));
            words.extend(line(200.0, top, b));
            words.extend(line(300.0, top, c));
        }
        words.extend(line(50.0, 160.0, "Figures are unaudited."));
        let (text, tables) = page_with_tables(&words).expect("a table");
        assert_eq!(
            text,
            "Quarterly sales by region\n\n| Region | Units | Revenue |\n| --- | --- | --- |\n\
             | North | 120 | 4.2 M |\n| South | 95 | 3.1 M |\n| East | 7 | 0.2 M |\n\n\
             Figures are unaudited."
        );
        assert_eq!(
            &text[tables[0].start..tables[0].body],
            "| Region | Units | Revenue |\n| --- | --- | --- |\n"
        );
    }

    #[test]
    fn prose_and_two_column_articles_are_not_tables() {
        let mut words = Vec::new();
        for i in 0..6 {
            let top = 50.0 + i as f32 * 12.0;
            words.extend(line(
                50.0,
                top,
                "the left column holds long running sentences",
            ));
            words.extend(line(
                330.0,
                top,
                "and so does the right one in this article",
            ));
        }
        assert!(page_with_tables(&words).is_none());
        let prose: Vec<Word> = (0..5)
            .flat_map(|i| {
                line(
                    50.0,
                    50.0 + i as f32 * 12.0,
                    "a plain paragraph line of words",
                )
            })
            .collect();
        assert!(page_with_tables(&prose).is_none());
    }

    #[test]
    fn tsv_words_go_to_their_pages() {
        let tsv = "level\tpage_num\tpar_num\tblock_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n\
            1\t1\t0\t0\t0\t0\t0\t0\t612\t792\t-1\t###PAGE###\n\
            5\t1\t0\t0\t0\t0\t10.5\t20\t30\t10\t100\tHello\n\
            5\t2\t0\t0\t0\t0\t10\t20\t30\t10\t100\tTwo\n";
        let pages = parse_tsv(tsv, 2);
        assert_eq!(pages[0][0].text, "Hello");
        assert_eq!(pages[0][0].left, 10.5);
        assert_eq!(pages[1][0].text, "Two");
    }
}
