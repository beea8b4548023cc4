//! Reading a corpus (the audited one, or a background corpus) into validated documents.
//!
//! Three formats, chosen by the path: a directory of `.txt` files (one document per file,
//! id = path relative to the directory), a `.parquet` file (`text` column, optional `id` and
//! `source`), or anything else read as JSONL (one object per line, `text` required, `id` and
//! `source` optional). A document without an id gets the sha256 hex of its text.
//! What users' tools write is read as it comes: a leading UTF-8 byte-order mark (JSONL and
//! `.txt`), and Parquet string columns in any Arrow encoding, dictionary-encoded ones
//! (pandas' categoricals) included.
//! Every problem is reported with the file and the line or row where it is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::schema::string_values;
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub id: String,
    pub text: String,
    /// Where the document comes from (a domain, a sub-collection, a language), if given.
    pub source: Option<String>,
}

/// Hex sha256 of a text: the id of a document that has none, and the corpus checksum.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The documents a file of ids lists, one id a line (blank lines skipped), as rows of a
/// corpus whose ids are `doc_ids`; an unknown id is refused naming its line, and a file
/// that lists none is refused.
pub fn listed_documents(path: &Path, doc_ids: &[String]) -> Result<Vec<u32>> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    let by_id: HashMap<&str, u32> = doc_ids.iter().enumerate().map(|(doc, id)| (id.as_str(), doc as u32)).collect();
    let mut docs = Vec::new();
    for (line, id) in text.lines().enumerate() {
        let id = id.trim();
        if id.is_empty() {
            continue;
        }
        let doc = by_id.get(id).ok_or_else(|| Error::Line {
            path: path.to_path_buf(),
            line: line + 1,
            message: format!("no document has id {id:?}"),
        })?;
        docs.push(*doc);
    }
    if docs.is_empty() {
        return Err(Error::file(path, "lists no document ids"));
    }
    Ok(docs)
}

/// sha256 over the documents' ids and texts, in order: what `run.toml` records of a corpus.
pub fn checksum(documents: &[Document]) -> String {
    let mut bytes = Vec::new();
    for document in documents {
        for part in [document.id.as_bytes(), document.text.as_bytes()] {
            bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
            bytes.extend_from_slice(part);
        }
    }
    sha256_hex(&bytes)
}

/// Reads and validates the corpus at `path`: a JSONL file (one object per line with `text`,
/// optional `id` and `source`), a Parquet file with those columns, or a directory of `.txt`
/// files.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("cfmem-doc-corpus-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("corpus.jsonl");
/// std::fs::write(&path, "{\"id\": \"a\", \"text\": \"first\", \"source\": \"web\"}\n{\"text\": \"second\"}\n").unwrap();
/// let documents = subsets::corpus::read(&path).unwrap();
/// assert_eq!(documents.len(), 2);
/// assert_eq!((documents[0].id.as_str(), documents[0].source.as_deref()), ("a", Some("web")));
/// assert_eq!(documents[1].text, "second");
///
/// // Bad input is refused, naming the file and the line.
/// std::fs::write(&path, "{\"text\": \"fine\"}\n{\"txt\": \"typo\"}\n").unwrap();
/// let error = subsets::corpus::read(&path).unwrap_err().to_string();
/// assert!(error.contains("corpus.jsonl") && error.contains("line 2"), "{error}");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn read(path: &Path) -> Result<Vec<Document>> {
    let meta = std::fs::metadata(path).map_err(Error::io(path))?;
    let located = if meta.is_dir() {
        read_txt_dir(path)?
    } else if path.extension().is_some_and(|e| e == "parquet") {
        read_parquet(path)?
    } else {
        read_jsonl(path)?
    };
    validate(path, located)
}

/// The values of the string fields `names` of every document of the corpus at `path`, in
/// the order of [`read`]: for each name, one value per document, None where a document has
/// none. A JSONL field no object has, a Parquet column that is missing, a value that is not
/// a string, or a directory of `.txt` files (which has no fields) is an error naming it.
pub fn read_fields(path: &Path, names: &[String]) -> Result<Vec<Vec<Option<String>>>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let meta = std::fs::metadata(path).map_err(Error::io(path))?;
    if meta.is_dir() {
        return Err(Error::file(path, format!("a directory of .txt files has no field `{}`", names[0])));
    }
    if path.extension().is_some_and(|e| e == "parquet") {
        return names
            .iter()
            .map(|name| {
                crate::schema::read_strings(path, name).map_err(|e| match e {
                    Error::File { path, message } => {
                        Error::File { path, message: format!("field `{name}`: {message}") }
                    }
                    other => other,
                })
            })
            .collect();
    }
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    let lines: Vec<&[u8]> = without_bom(&bytes).split(|&b| b == b'\n').collect();
    let per_line: Vec<Result<Option<Vec<Option<String>>>>> = lines
        .par_iter()
        .enumerate()
        .map(|(index, raw)| {
            let place = Place::Line(index + 1);
            let Ok(line) = std::str::from_utf8(raw) else { return Ok(None) };
            if line.trim().is_empty() {
                return Ok(None);
            }
            let Ok(serde_json::Value::Object(object)) = serde_json::from_str::<serde_json::Value>(line) else {
                return Ok(None);
            };
            names
                .iter()
                .map(|name| match object.get(name) {
                    None | Some(serde_json::Value::Null) => Ok(None),
                    Some(serde_json::Value::String(value)) => Ok(Some(value.clone())),
                    Some(other) => Err(error_at(
                        path,
                        &place,
                        format!("field `{name}` is not a string (found {other}); a group field must be one"),
                    )),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some)
        })
        .collect();
    let mut fields = vec![Vec::new(); names.len()];
    for values in per_line {
        if let Some(values) = values? {
            fields.iter_mut().zip(values).for_each(|(field, value)| field.push(value));
        }
    }
    if let Some((name, _)) = names.iter().zip(&fields).find(|(_, values)| values.iter().all(Option::is_none)) {
        return Err(Error::file(path, format!("no document has a field `{name}`")));
    }
    Ok(fields)
}

/// A document and the place it was read from, for error messages.
struct Located {
    doc: Document,
    place: Place,
}

#[derive(Clone)]
enum Place {
    Line(usize),
    Row(usize),
    File(PathBuf),
}

fn error_at(corpus: &Path, place: &Place, message: String) -> Error {
    match place {
        Place::Line(line) => Error::Line { path: corpus.to_path_buf(), line: *line, message },
        Place::Row(row) => Error::Row { path: corpus.to_path_buf(), row: *row, message },
        Place::File(file) => Error::file(file, message),
    }
}

fn describe(place: &Place) -> String {
    match place {
        Place::Line(line) => format!("line {line}"),
        Place::Row(row) => format!("row {row}"),
        Place::File(file) => file.display().to_string(),
    }
}

fn validate(path: &Path, located: Vec<Located>) -> Result<Vec<Document>> {
    if located.is_empty() {
        return Err(Error::file(path, "the corpus has no documents"));
    }
    let mut seen: HashMap<&str, &Place> = HashMap::new();
    for item in &located {
        if item.doc.text.trim().is_empty() {
            return Err(error_at(path, &item.place, "field `text` is empty".into()));
        }
        if let Some(first) = seen.insert(&item.doc.id, &item.place) {
            let mut message = format!("duplicate document id {:?} (first seen at {})", item.doc.id, describe(first));
            if item.doc.id == sha256_hex(item.doc.text.as_bytes()) {
                message.push_str(
                    "; a document without an id is named by the sha256 of its text, \
                     so give exact duplicates an `id` to keep them",
                );
            }
            return Err(error_at(path, &item.place, message));
        }
    }
    Ok(located.into_iter().map(|l| l.doc).collect())
}

fn document(text: String, id: Option<String>, source: Option<String>) -> Document {
    let id = id.unwrap_or_else(|| sha256_hex(text.as_bytes()));
    Document { id, text, source }
}

/// `bytes` without the UTF-8 byte-order mark that some editors and exporters (Excel,
/// Notepad, .NET) put at the start of a file: it is not part of the text.
fn without_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// Lines are parsed in parallel (JSON parsing is most of the time of reading a large
/// corpus); the first bad line, in file order, is the one reported.
fn read_jsonl(path: &Path) -> Result<Vec<Located>> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    let lines: Vec<&[u8]> = without_bom(&bytes).split(|&b| b == b'\n').collect();
    let parsed: Vec<Result<Option<Located>>> =
        lines.par_iter().enumerate().map(|(index, raw)| parse_jsonl_line(path, raw, Place::Line(index + 1))).collect();
    parsed.into_iter().filter_map(Result::transpose).collect()
}

/// One JSONL line as a document, or None for a blank line.
fn parse_jsonl_line(path: &Path, raw: &[u8], place: Place) -> Result<Option<Located>> {
    let line = std::str::from_utf8(raw)
        .map_err(|e| error_at(path, &place, format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
    if line.trim().is_empty() {
        return Ok(None);
    }
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| error_at(path, &place, format!("malformed JSON: {e}")))?;
    let serde_json::Value::Object(mut object) = value else {
        return Err(error_at(path, &place, "expected a JSON object".into()));
    };
    let text = match object.remove("text") {
        Some(serde_json::Value::String(text)) => text,
        Some(_) => return Err(error_at(path, &place, "field `text` is not a string".into())),
        None => return Err(error_at(path, &place, "missing field `text`".into())),
    };
    let id = match object.remove("id") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(id)) => Some(id),
        Some(serde_json::Value::Number(id)) => Some(id.to_string()),
        Some(_) => return Err(error_at(path, &place, "field `id` is not a string or number".into())),
    };
    let source = match object.remove("source") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(source)) => Some(source),
        Some(_) => return Err(error_at(path, &place, "field `source` is not a string".into())),
    };
    Ok(Some(Located { doc: document(text, id, source), place }))
}

fn read_parquet(path: &Path) -> Result<Vec<Located>> {
    let mut docs = Vec::new();
    for batch in crate::schema::record_batches(path)? {
        let batch: RecordBatch = batch?;
        // A column of another type is named with the first row of the batch that holds it.
        let place = Place::Row(docs.len() + 1);
        let strings = |name: &str| -> Result<Option<Vec<Option<String>>>> {
            let Some(column) = batch.column_by_name(name) else { return Ok(None) };
            let values = string_values(column.as_ref())
                .map_err(|found| error_at(path, &place, format!("column `{name}`: {found}")))?;
            Ok(Some(values))
        };
        let texts = strings("text")?.ok_or_else(|| Error::file(path, "no column `text`"))?;
        let mut ids = strings("id")?.map(Vec::into_iter);
        let mut sources = strings("source")?.map(Vec::into_iter);
        for text in texts {
            let place = Place::Row(docs.len() + 1);
            let text = text.ok_or_else(|| error_at(path, &place, "missing `text` (null)".into()))?;
            let id = ids.as_mut().and_then(|ids| ids.next().flatten());
            let source = sources.as_mut().and_then(|sources| sources.next().flatten());
            docs.push(Located { doc: document(text, id, source), place });
        }
    }
    Ok(docs)
}

fn read_txt_dir(root: &Path) -> Result<Vec<Located>> {
    let mut files = Vec::new();
    collect_txt(root, &mut files)?;
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let mut bytes = std::fs::read(&file).map_err(Error::io(&file))?;
        bytes.drain(..bytes.len() - without_bom(&bytes).len());
        let text = String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            Error::file(&file, format!("invalid UTF-8 at byte {at}"))
        })?;
        let relative = file.strip_prefix(root).expect("walked below root");
        let id = relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
        docs.push(Located { doc: document(text, Some(id), None), place: Place::File(file) });
    }
    Ok(docs)
}

fn collect_txt(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let path = entry.map_err(Error::io(dir))?.path();
        if path.is_dir() {
            collect_txt(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "txt") {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::types::Int8Type;
    use arrow_array::{
        ArrayRef, DictionaryArray, Int8Array, Int64Array, LargeStringArray, StringArray, StringViewArray,
    };
    use parquet::arrow::ArrowWriter;

    use super::*;

    fn jsonl(content: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corpus.jsonl");
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    fn error_of(content: &[u8]) -> String {
        let (_dir, path) = jsonl(content);
        read(&path).unwrap_err().to_string()
    }

    #[test]
    fn jsonl_ids_default_to_sha256_and_sources_are_kept() {
        let (_dir, path) = jsonl(b"{\"text\":\"abc\"}\n\n{\"text\":\"x\",\"id\":7,\"source\":\"web\"}\n");
        let docs = read(&path).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].id, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(docs[0].source, None);
        assert_eq!(docs[1].id, "7");
        assert_eq!(docs[1].source.as_deref(), Some("web"));
    }

    #[test]
    fn bad_jsonl_lines_are_named() {
        assert!(error_of(b"{\"text\":\"a\"}\n{\"text\":\"b\"\n").contains("line 2: malformed JSON"));
        assert!(error_of(b"{\"txt\":\"a\"}\n").contains("line 1: missing field `text`"));
        assert!(error_of(b"{\"text\":\"a\"}\n{\"text\":\"  \"}\n").contains("line 2: field `text` is empty"));
        assert!(error_of(b"{\"text\":\"a\"}\n{\"text\":\"\xff\"}\n").contains("line 2: invalid UTF-8"));
        assert!(error_of(b"[1]\n").contains("line 1: expected a JSON object"));
        assert!(error_of(b"{\"text\":5}\n").contains("line 1: field `text` is not a string"));
        let dup = error_of(b"{\"text\":\"a\",\"id\":\"x\"}\n{\"text\":\"b\",\"id\":\"x\"}\n");
        assert!(dup.contains("line 2: duplicate document id \"x\" (first seen at line 1)"), "{dup}");
        assert!(error_of(b"\n\n").contains("the corpus has no documents"));
        // Lines are parsed in parallel, yet the first bad one is reported.
        let mut many: Vec<u8> = (1..=20_000).flat_map(|i| format!("{{\"text\":\"doc {i}\"}}\n").into_bytes()).collect();
        let line_start = |line: usize| many.split(|&b| b == b'\n').take(line - 1).map(|l| l.len() + 1).sum::<usize>();
        let (first, later) = (line_start(7_000), line_start(19_000));
        many[later] = b'[';
        many[first] = b'[';
        let err = error_of(&many);
        assert!(err.contains("line 7000: malformed JSON"), "{err}");
    }

    #[test]
    fn a_leading_byte_order_mark_is_not_text() {
        let (_dir, path) = jsonl(b"\xEF\xBB\xBF{\"text\":\"abc\",\"id\":\"a\"}\n{\"text\":\"d\"}\n");
        let docs = read(&path).unwrap();
        assert_eq!((docs[0].id.as_str(), docs[0].text.as_str()), ("a", "abc"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), b"\xEF\xBB\xBFbee").unwrap();
        assert_eq!(read(dir.path()).unwrap()[0].text, "bee");
        // Only at the start: elsewhere it is a character of the text.
        let (_dir, path) = jsonl(b"{\"text\":\"x\"}\n\xEF\xBB\xBF{\"text\":\"y\"}\n");
        assert!(read(&path).unwrap_err().to_string().contains("line 2: malformed JSON"));
    }

    /// A Parquet corpus of `text` and `source` columns as given.
    fn parquet_corpus(text: ArrayRef, source: ArrayRef) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corpus.parquet");
        let batch = RecordBatch::try_from_iter([("text", text), ("source", source)]).unwrap();
        let mut writer = ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        (dir, path)
    }

    #[test]
    fn parquet_string_columns_are_read_in_every_arrow_encoding() {
        let texts = ["one text", "another text", "a third"];
        let sources = [Some("web"), None, Some("web")];
        let dictionary = |keys: Vec<Option<i8>>, values: &[&str]| -> ArrayRef {
            let values = Arc::new(LargeStringArray::from(values.to_vec()));
            Arc::new(DictionaryArray::<Int8Type>::try_new(Int8Array::from(keys), values).unwrap())
        };
        let encodings: [(&str, ArrayRef, ArrayRef); 4] = [
            ("Utf8", Arc::new(StringArray::from(texts.to_vec())), Arc::new(StringArray::from(sources.to_vec()))),
            (
                "LargeUtf8",
                Arc::new(LargeStringArray::from(texts.to_vec())),
                Arc::new(LargeStringArray::from(sources.to_vec())),
            ),
            (
                "Utf8View",
                Arc::new(StringViewArray::from(texts.to_vec())),
                Arc::new(StringViewArray::from(sources.to_vec())),
            ),
            (
                "Dictionary(Int8, LargeUtf8), as pandas writes a categorical",
                dictionary(vec![Some(2), Some(0), Some(1)], &["another text", "a third", "one text"]),
                dictionary(vec![Some(0), None, Some(0)], &["web"]),
            ),
        ];
        for (encoding, text, source) in encodings {
            let (_dir, path) = parquet_corpus(text, source);
            let docs = read(&path).unwrap_or_else(|e| panic!("{encoding}: {e}"));
            let read_texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
            let read_sources: Vec<Option<&str>> = docs.iter().map(|d| d.source.as_deref()).collect();
            assert_eq!(read_texts, texts, "{encoding}");
            assert_eq!(read_sources, sources, "{encoding}");
        }
        let (_dir, path) =
            parquet_corpus(Arc::new(Int64Array::from(vec![1, 2, 3])), Arc::new(StringArray::from(sources.to_vec())));
        let err = read(&path).unwrap_err().to_string();
        assert!(err.ends_with("corpus.parquet: row 1: column `text`: expected a string, found Int64"), "{err}");
    }

    #[test]
    fn group_fields_are_read_in_document_order_and_bad_ones_named() {
        let (_dir, path) = jsonl(
            b"{\"text\":\"a\",\"site\":\"x.org\"}\n\n{\"text\":\"b\"}\n{\"text\":\"c\",\"site\":\"y.org\",\"n\":3}\n",
        );
        let fields = read_fields(&path, &["site".into()]).unwrap();
        assert_eq!(fields, [vec![Some("x.org".to_string()), None, Some("y.org".to_string())]]);
        let err = read_fields(&path, &["url".into()]).unwrap_err().to_string();
        assert!(err.ends_with("corpus.jsonl: no document has a field `url`"), "{err}");
        let err = read_fields(&path, &["n".into()]).unwrap_err().to_string();
        assert!(
            err.ends_with("corpus.jsonl: line 4: field `n` is not a string (found 3); a group field must be one"),
            "{err}"
        );
        let (_dir, parquet) =
            parquet_corpus(Arc::new(StringArray::from(vec!["a", "b"])), Arc::new(Int64Array::from(vec![1, 2])));
        assert_eq!(read_fields(&parquet, &["text".into()]).unwrap()[0][1].as_deref(), Some("b"));
        let err = read_fields(&parquet, &["source".into()]).unwrap_err().to_string();
        assert!(err.contains("field `source`: column `source`: expected Utf8, found Int64"), "{err}");
        let err = read_fields(&parquet, &["site".into()]).unwrap_err().to_string();
        assert!(err.contains("field `site`: no column `site`"), "{err}");
    }

    #[test]
    fn unreadable_path_is_named() {
        let err = read(Path::new("/nonexistent/corpus.jsonl")).unwrap_err().to_string();
        assert!(err.starts_with("/nonexistent/corpus.jsonl: "), "{err}");
    }

    #[test]
    fn txt_directory_uses_relative_paths_as_ids() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("b.txt"), "bee").unwrap();
        std::fs::write(dir.path().join("sub/a.txt"), "ay").unwrap();
        std::fs::write(dir.path().join("notes.md"), "ignored").unwrap();
        let docs = read(dir.path()).unwrap();
        let ids: Vec<_> = docs.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["b.txt", "sub/a.txt"]);
        std::fs::write(dir.path().join("sub/bad.txt"), b"\xc3\x28").unwrap();
        let err = read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("sub/bad.txt: invalid UTF-8 at byte 0"), "{err}");
    }
}
