//! The `data` section: inline items, a file of one item per line, or a table with a header
//! row (`.csv`, `.tsv`: quoted fields, CRLF, a byte order mark as spreadsheets save them), and
//! how items reach the slaves (`strategy`).

use super::*;
use crate::scenario::DataStrategy;
use crate::scenario::file::DataFile;

/// What the requests may use of the data.
pub(crate) struct DataShape {
    pub has_items: bool,
    /// Column names of a table; empty for plain items.
    pub columns: Vec<String>,
}

/// The resolved data: items (rows as JSON arrays when there are columns), columns, strategy.
pub(super) struct Data {
    pub items: Vec<String>,
    pub columns: Vec<String>,
    pub strategy: DataStrategy,
}

pub(super) fn resolve_data(
    d: Option<&Spanned<DataFile>>,
    read_file: &dyn Fn(&str) -> Result<String, String>,
) -> Res<Data> {
    let Some(d) = d else {
        return Ok(Data {
            items: Vec::new(),
            columns: Vec::new(),
            strategy: DataStrategy::Slice,
        });
    };
    let strategy = match &d.value.strategy {
        None => DataStrategy::Slice,
        Some(s) => match s.value.trim() {
            "slice" => DataStrategy::Slice,
            "cycle" => DataStrategy::Cycle,
            "random" => DataStrategy::Random,
            other => {
                return Err(fault(
                    s.referenced,
                    format!(
                        "unknown data strategy `{other}`: expected slice (each slave its own items), cycle (all items, in turn) or random"
                    ),
                ));
            }
        },
    };
    let (items, columns) = match (&d.value.items, &d.value.file) {
        (Some(items), None) => (items.clone(), Vec::new()),
        (None, Some(file)) => {
            let text = read_file(&file.value)
                .map_err(|m| fault(file.referenced, format!("data file: {m}")))?;
            let lower = file.value.to_ascii_lowercase();
            let delimiter = if lower.ends_with(".csv") {
                Some(b',')
            } else if lower.ends_with(".tsv") {
                Some(b'\t')
            } else {
                None
            };
            match delimiter {
                Some(delimiter) => table(&text, delimiter).map_err(|m| {
                    fault(file.referenced, format!("data file {}: {m}", file.value))
                })?,
                None => (
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(String::from)
                        .collect(),
                    Vec::new(),
                ),
            }
        }
        _ => {
            return Err(fault(
                d.referenced,
                "data needs exactly one of `items` or `file`",
            ));
        }
    };
    if items.is_empty() {
        return Err(fault(d.referenced, "data has no items"));
    }
    if items.len() > MAX_DATA_ITEMS {
        return Err(fault(
            d.referenced,
            format!("more than {MAX_DATA_ITEMS} data items"),
        ));
    }
    Ok(Data {
        items,
        columns,
        strategy,
    })
}

/// Rows of a table with a header row, each as a JSON array of its fields.
fn table(text: &str, delimiter: u8) -> Result<(Vec<String>, Vec<String>), String> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .from_reader(text.as_bytes());
    let columns: Vec<String> = reader
        .headers()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if columns.is_empty() || columns.iter().any(String::is_empty) {
        return Err("the header row must name every column".into());
    }
    let mut seen = BTreeSet::new();
    if let Some(dup) = columns.iter().find(|c| !seen.insert(c.as_str())) {
        return Err(format!("column `{dup}` appears twice in the header row"));
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| match e.position() {
            Some(p) => format!("line {}: {e}", p.line()),
            None => e.to_string(),
        })?;
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let fields: Vec<&str> = record.iter().collect();
        rows.push(serde_json::to_string(&fields).expect("strings serialize"));
    }
    Ok((rows, columns))
}
