//! docs/reference.md stays in step with the run format the code writes: every Parquet table
//! that `subsets::schema::every_table` lists has a section there naming its struct, with
//! every column and its type and no column the table lacks; the `parquet-schemas` block the
//! interop test reads agrees with the code column for column; `every_table` itself lists
//! every `table!` of `subsets/src/schema.rs`; and every top-level key of `run.toml` is
//! documented. Only source and docs are read: no cfmem binary runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use subsets::schema::every_table;

const REFERENCE: &str = "docs/reference.md";

/// Tables written only outside a run (to a command's `--out` file), so not in the
/// `parquet-schemas` block, whose patterns are paths inside a run.
const OUTSIDE_A_RUN: &[&str] = &["TargetAttackTable"];

fn read(relative: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A column's type as pyarrow names it (and as docs/reference.md writes it), `?` when it
/// may hold nulls.
fn pyarrow_type(data_type: String, nullable: bool) -> String {
    let name = match data_type.as_str() {
        "UInt16" => "uint16",
        "UInt32" => "uint32",
        "Float64" => "double",
        "Boolean" => "bool",
        "Utf8" => "string",
        other => panic!("no pyarrow name for the Arrow type {other}: add it to pyarrow_type in {}", file!()),
    };
    format!("{name}{}", if nullable { "?" } else { "" })
}

/// Every table of the code: its name, then its columns with their types, in order.
fn code_tables() -> Vec<(&'static str, Vec<(String, String)>)> {
    every_table()
        .into_iter()
        .map(|(name, schema)| {
            let columns = schema
                .fields()
                .iter()
                .map(|f| (f.name().to_string(), pyarrow_type(format!("{:?}", f.data_type()), f.is_nullable())))
                .collect();
            (name, columns)
        })
        .collect()
}

/// The text between backticks at the start of `cell`, if it starts with one.
fn backticked(cell: &str) -> Option<&str> {
    let rest = cell.trim().strip_prefix('`')?;
    Some(&rest[..rest.find('`')?])
}

/// The cells of a markdown table row (`| a | b |`), or None for another line.
fn cells(line: &str) -> Option<Vec<&str>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split(" | ").map(str::trim).collect())
}

/// docs/reference.md's table sections: for each `###` heading naming a struct `…Table` in
/// backticks, the rows of its markdown tables whose first cell is a backticked name, as
/// (name, second cell). Code blocks are skipped.
fn documented_tables(reference: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut sections: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_code = false;
    for line in reference.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        if line.starts_with('#') {
            current = line
                .strip_prefix("### ")
                .and_then(|heading| heading.split('`').skip(1).step_by(2).find(|word| word.ends_with("Table")))
                .map(String::from);
            if let Some(name) = &current {
                assert!(!sections.contains_key(name), "{REFERENCE}: two sections for `{name}`");
                sections.insert(name.clone(), Vec::new());
            }
            continue;
        }
        let (Some(table), Some(row)) = (&current, cells(line)) else { continue };
        if let Some(column) = row.first().copied().and_then(backticked) {
            let kind = row.get(1).copied().unwrap_or_default().to_string();
            sections.get_mut(table).expect("a section").push((column.to_string(), kind));
        }
    }
    sections
}

/// The struct names of every `table! { … pub struct NAME { … } }` of schema.rs.
fn tables_declared_in_schema_rs() -> BTreeSet<String> {
    let source = read("subsets/src/schema.rs");
    let mut names = BTreeSet::new();
    let mut in_table = false;
    let mut blocks = 0;
    for line in source.lines().map(str::trim) {
        if line == "table! {" {
            in_table = true;
            blocks += 1;
        } else if in_table && let Some(rest) = line.strip_prefix("pub struct ") {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            assert!(names.insert(name.clone()), "schema.rs declares `{name}` twice");
            in_table = false;
        }
    }
    assert_eq!(names.len(), blocks, "schema.rs: a `table!` block without a `pub struct` this test could read");
    names
}

#[test]
fn every_table_lists_each_table_declared_in_schema_rs() {
    let declared = tables_declared_in_schema_rs();
    let listed: BTreeSet<String> = every_table().into_iter().map(|(name, _)| name.to_string()).collect();
    let unlisted: Vec<_> = declared.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&declared).collect();
    assert!(
        unlisted.is_empty() && stale.is_empty(),
        "subsets::schema::every_table is out of step with the table! blocks of subsets/src/schema.rs: \
         add {unlisted:?} to it, remove {stale:?} from it"
    );
    assert_eq!(every_table().len(), listed.len(), "every_table lists a table twice");
}

#[test]
fn every_column_the_code_writes_is_documented_with_its_type() {
    let documented = documented_tables(&read(REFERENCE));
    let mut problems = Vec::new();
    for (table, columns) in code_tables() {
        let Some(rows) = documented.get(table) else {
            problems.push(format!(
                "table `{table}` has no section: document it in {REFERENCE} under a heading \
                 \"### `{table}`: `FILE.parquet`\" with a row per column"
            ));
            continue;
        };
        let rows: BTreeMap<&str, &str> = rows.iter().map(|(c, t)| (c.as_str(), t.as_str())).collect();
        for (column, kind) in &columns {
            match rows.get(column.as_str()) {
                None => problems.push(format!(
                    "table `{table}`: column `{column}` ({kind}) is missing: document it in {REFERENCE}, \
                     in the section of `{table}`, as a row \"| `{column}` | {kind} | … |\""
                )),
                Some(documented) if documented != kind => problems.push(format!(
                    "table `{table}`: column `{column}` is {kind} in the code but {documented} in {REFERENCE}: \
                     correct it there"
                )),
                Some(_) => {}
            }
        }
    }
    assert!(problems.is_empty(), "{REFERENCE} is out of step with the code:\n  {}", problems.join("\n  "));
}

#[test]
fn every_documented_column_is_written_by_the_code() {
    let code: BTreeMap<&str, BTreeSet<String>> = code_tables()
        .into_iter()
        .map(|(name, columns)| (name, columns.into_iter().map(|(c, _)| c).collect()))
        .collect();
    let mut problems = Vec::new();
    for (table, rows) in documented_tables(&read(REFERENCE)) {
        let Some(columns) = code.get(table.as_str()) else {
            problems.push(format!(
                "{REFERENCE} has a section for `{table}`, which subsets::schema::every_table does not list: \
                 remove it, or list the table"
            ));
            continue;
        };
        for (column, _) in rows.iter().filter(|(column, _)| !columns.contains(column)) {
            problems.push(format!(
                "{REFERENCE} documents column `{column}` of `{table}`, which the code does not write: remove it"
            ));
        }
    }
    assert!(problems.is_empty(), "{REFERENCE} is out of step with the code:\n  {}", problems.join("\n  "));
}

#[test]
fn the_parquet_schemas_block_matches_the_code_column_for_column() {
    let reference = read(REFERENCE);
    let start = "<!-- parquet-schemas -->\n```text\n";
    let at = reference.find(start).unwrap_or_else(|| {
        panic!("{REFERENCE} has no `{}` block: the interop test reads it", start.trim_end().replace('\n', " "))
    });
    let block = &reference[at + start.len()..];
    let block = &block[..block.find("```").expect("the parquet-schemas block is closed")];
    // An entry is a line and the indented lines continuing it.
    let mut entries: Vec<String> = Vec::new();
    for line in block.lines() {
        match entries.last_mut() {
            Some(entry) if line.starts_with(char::is_whitespace) => {
                entry.push(' ');
                entry.push_str(line.trim());
            }
            _ => entries.push(line.trim().to_string()),
        }
    }
    let code: BTreeMap<&str, Vec<(String, String)>> = code_tables().into_iter().collect();
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for entry in &entries {
        let parsed = entry.split_once(" (").and_then(|(pattern, rest)| {
            let (table, columns) = rest.split_once("): ")?;
            Some((pattern, table, columns))
        });
        let Some((pattern, table, columns)) = parsed else {
            problems.push(format!("entry not understood (\"PATTERN (TABLE): column type, …\"): {entry:?}"));
            continue;
        };
        let Some(expected) = code.get(table) else {
            problems.push(format!("{pattern}: table `{table}` is not one of subsets::schema::every_table"));
            continue;
        };
        seen.insert(table);
        let listed: Vec<(String, String)> = columns
            .split(", ")
            .map(|column| {
                let (name, kind) = column.split_once(' ').unwrap_or((column, ""));
                (name.to_string(), kind.to_string())
            })
            .collect();
        if listed != *expected {
            let want: Vec<String> = expected.iter().map(|(c, t)| format!("{c} {t}")).collect();
            problems.push(format!("{pattern} ({table}): the code writes\n      {}", want.join(", ")));
        }
    }
    for (table, _) in code_tables() {
        if !seen.contains(table) && !OUTSIDE_A_RUN.contains(&table) {
            problems.push(format!("table `{table}` has no line: add \"FILE.parquet ({table}): column type, …\""));
        }
    }
    assert!(
        problems.is_empty(),
        "the parquet-schemas block of {REFERENCE} is out of step with the code; correct it there:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn every_top_level_key_of_run_toml_is_documented() {
    let source = read("subsets/src/config/mod.rs");
    let body = source
        .split_once("pub struct RunConfig {")
        .and_then(|(_, rest)| rest.split_once("\n}"))
        .map(|(body, _)| body)
        .expect("subsets/src/config/mod.rs declares `pub struct RunConfig { … }`");
    let keys: Vec<&str> = body
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub ")?.split_once(':').map(|(name, _)| name.trim()))
        .collect();
    assert!(keys.contains(&"seed") && keys.contains(&"design"), "RunConfig's fields not read: {keys:?}");

    let reference = read(REFERENCE);
    let section = reference.split_once("\n## run.toml\n").map(|(_, rest)| rest).unwrap_or_else(|| {
        panic!("{REFERENCE} has no \"## run.toml\" section: document run.toml's top-level keys there")
    });
    let section = section.split_once("\n## ").map_or(section, |(section, _)| section);
    let documented: BTreeSet<String> = section
        .lines()
        .filter_map(cells)
        .filter_map(|row| backticked(row[0]).map(|key| key.trim_matches(|c| c == '[' || c == ']').to_string()))
        .collect();
    let missing: Vec<&&str> = keys.iter().filter(|key| !documented.contains(**key)).collect();
    assert!(
        missing.is_empty(),
        "run.toml's top-level keys {missing:?} (RunConfig in subsets/src/config/mod.rs) are not documented: \
         document each in {REFERENCE}, section \"run.toml\", as a row \"| `[key]` | … |\""
    );
}
