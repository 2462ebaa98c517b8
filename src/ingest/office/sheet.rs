//! Spreadsheets (XLSX, ODS) with calamine: sheet by sheet, each sheet a page headed by its
//! name, its used range as one table whose first non-empty row is the header.

use std::io::Cursor;

use calamine::{open_workbook_auto_from_rs, Data, Reader};

use super::super::builder::{Builder, Built};
use super::{nonempty, IngestError};

/// Most cells read from one workbook; the rest is dropped with a warning.
const MAX_CELLS: usize = 2_000_000;

/// The workbook's sheets as tables, and warnings (cells dropped past [`MAX_CELLS`]).
pub fn extract(bytes: &[u8]) -> Result<(Built, Vec<String>), IngestError> {
    let mut book =
        open_workbook_auto_from_rs(Cursor::new(bytes)).map_err(|e| IngestError::Malformed {
            kind: "spreadsheet",
            detail: e.to_string(),
        })?;
    let mut b = Builder::new();
    let mut warnings = Vec::new();
    let mut cells = 0usize;
    for name in book.sheet_names() {
        let range = match book.worksheet_range(&name) {
            Ok(r) => r,
            Err(e) => {
                warnings.push(format!("sheet `{name}`: {e}"));
                continue;
            }
        };
        let mut rows: Vec<Vec<String>> = Vec::new();
        for row in range.rows() {
            if cells + row.len() > MAX_CELLS {
                warnings.push(format!(
                    "sheet `{name}` and later sheets cut: the workbook holds more than \
                     {MAX_CELLS} cells"
                ));
                break;
            }
            cells += row.len();
            let row: Vec<String> = row.iter().map(cell_text).collect();
            if rows.is_empty() && row.iter().all(String::is_empty) {
                continue;
            }
            rows.push(row);
        }
        if rows.is_empty() {
            continue;
        }
        b.page();
        b.heading(1, &name);
        b.table(Some(&name), &rows, true);
        if cells >= MAX_CELLS {
            break;
        }
    }
    Ok((nonempty(b.finish())?, warnings))
}

fn cell_text(d: &Data) -> String {
    match d {
        Data::Empty => String::new(),
        Data::Error(e) => format!("#{e:?}"),
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        // Dates are stored as day counts; shown as people read them.
        Data::DateTime(d) if d.is_datetime() => match d.as_datetime() {
            Some(t) if t.time() == chrono::NaiveTime::MIN => t.format("%Y-%m-%d").to_string(),
            Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
            None => d.to_string(),
        },
        other => other.to_string(),
    }
}
