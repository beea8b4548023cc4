//! `membership.bin`: which documents each model trains on, one bit per (model, document),
//! stored model by model so that a worker reads only its own models' rows.
//!
//! Layout: a 16-byte header (the magic `CFMEMBS1`, then models and documents as u32 little
//! endian), then one row per model of ceil(documents / 8) bytes. Bit `d % 8` (least
//! significant first) of byte `d / 8` of row `m` is set when document `d` is IN for model `m`.
//! 1,000 models over 1,000,000 documents take 125 MB; a worker seeks to its rows and reads
//! 125 kB per model.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::{Error, Result, atomic};

const MAGIC: &[u8; 8] = b"CFMEMBS1";
const HEADER_BYTES: u64 = 16;

/// The IN bits of every model of a run, held in memory (for `plan` and `plan --extend`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    models: u32,
    documents: u32,
    bits: Vec<u8>,
}

fn row_bytes(documents: u32) -> usize {
    (documents as usize).div_ceil(8)
}

impl Membership {
    /// Every document OUT for every model.
    pub fn new(models: u32, documents: u32) -> Membership {
        Membership { models, documents, bits: vec![0; models as usize * row_bytes(documents)] }
    }

    pub fn models(&self) -> u32 {
        self.models
    }

    pub fn documents(&self) -> u32 {
        self.documents
    }

    pub fn set(&mut self, model: u32, doc: u32) {
        let row = model as usize * row_bytes(self.documents);
        self.bits[row + doc as usize / 8] |= 1 << (doc % 8);
    }

    pub fn contains(&self, model: u32, doc: u32) -> bool {
        let row = model as usize * row_bytes(self.documents);
        self.bits[row + doc as usize / 8] & (1 << (doc % 8)) != 0
    }

    /// The documents model `model` trains on, sorted.
    pub fn docs_of(&self, model: u32) -> Vec<u32> {
        let width = row_bytes(self.documents);
        docs_in_row(&self.bits[model as usize * width..][..width])
    }

    /// Adds `more` models, every document OUT for them; existing rows are unchanged.
    pub fn add_models(&mut self, more: u32) {
        self.models += more;
        self.bits.resize(self.models as usize * row_bytes(self.documents), 0);
    }

    /// Keeps only the first `models` rows.
    pub fn truncate_models(&mut self, models: u32) {
        self.models = self.models.min(models);
        self.bits.truncate(self.models as usize * row_bytes(self.documents));
    }

    /// Writes the file atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        atomic::write_with(path, |file| {
            let mut out = std::io::BufWriter::new(file);
            out.write_all(MAGIC)
                .and_then(|()| out.write_all(&self.models.to_le_bytes()))
                .and_then(|()| out.write_all(&self.documents.to_le_bytes()))
                .and_then(|()| out.write_all(&self.bits))
                .and_then(|()| out.flush())
                .map_err(Error::io(path))
        })
    }

    /// Reads the whole file.
    pub fn read(path: &Path) -> Result<Membership> {
        let (mut file, models, documents) = open(path)?;
        let mut bits = vec![0; models as usize * row_bytes(documents)];
        file.read_exact(&mut bits).map_err(|e| truncated(path, e))?;
        Ok(Membership { models, documents, bits })
    }
}

/// The models and documents counts in the header of the file at `path`.
pub fn header(path: &Path) -> Result<(u32, u32)> {
    open(path).map(|(_, models, documents)| (models, documents))
}

/// The sorted documents of each of `models`, reading only their rows.
pub fn read_models(path: &Path, models: &[u32]) -> Result<Vec<Vec<u32>>> {
    let (mut file, count, documents) = open(path)?;
    let width = row_bytes(documents);
    let mut row = vec![0; width];
    models
        .iter()
        .map(|&model| {
            if model >= count {
                return Err(Error::file(path, format!("model {model} is not among its {count} models")));
            }
            file.seek(SeekFrom::Start(HEADER_BYTES + model as u64 * width as u64)).map_err(Error::io(path))?;
            file.read_exact(&mut row).map_err(|e| truncated(path, e))?;
            Ok(docs_in_row(&row))
        })
        .collect()
}

fn docs_in_row(row: &[u8]) -> Vec<u32> {
    let mut docs = Vec::new();
    for (i, &byte) in row.iter().enumerate() {
        let mut rest = byte;
        while rest != 0 {
            docs.push(i as u32 * 8 + rest.trailing_zeros());
            rest &= rest - 1;
        }
    }
    docs
}

fn open(path: &Path) -> Result<(std::fs::File, u32, u32)> {
    let mut file = std::fs::File::open(path).map_err(Error::io(path))?;
    let mut header = [0; HEADER_BYTES as usize];
    file.read_exact(&mut header).map_err(|e| truncated(path, e))?;
    if &header[..8] != MAGIC {
        return Err(Error::file(path, "not a cfmem membership file (bad magic)"));
    }
    let models = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    let documents = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
    let expected = HEADER_BYTES + models as u64 * row_bytes(documents) as u64;
    let actual = file.metadata().map_err(Error::io(path))?.len();
    if actual != expected {
        return Err(Error::file(
            path,
            format!("{actual} bytes, but {models} models × {documents} documents need {expected}"),
        ));
    }
    Ok((file, models, documents))
}

fn truncated(path: &Path, error: std::io::Error) -> Error {
    Error::file(path, format!("truncated: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_one_model_is_read_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("membership.bin");
        let mut bits = Membership::new(3, 13);
        for (model, doc) in [(0, 0), (0, 12), (1, 7), (1, 8), (2, 3)] {
            bits.set(model, doc);
        }
        bits.write(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 16 + 3 * 2);
        assert_eq!(Membership::read(&path).unwrap(), bits);
        assert_eq!(read_models(&path, &[1, 0]).unwrap(), [vec![7, 8], vec![0, 12]]);
        assert_eq!(bits.docs_of(2), [3]);
        assert!(bits.contains(0, 12) && !bits.contains(0, 11));
        assert_eq!(header(&path).unwrap(), (3, 13));
        let err = read_models(&path, &[3]).unwrap_err().to_string();
        assert!(err.ends_with("model 3 is not among its 3 models"), "{err}");
    }

    #[test]
    fn adding_models_keeps_existing_rows_byte_for_byte() {
        let mut bits = Membership::new(2, 9);
        bits.set(1, 8);
        let before = bits.clone();
        bits.add_models(2);
        bits.set(3, 0);
        assert_eq!(bits.bits[..before.bits.len()], before.bits[..]);
        assert_eq!(bits.docs_of(3), [0]);
        bits.truncate_models(2);
        assert_eq!(bits, before);
    }

    #[test]
    fn a_cut_file_is_refused_with_its_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("membership.bin");
        Membership::new(4, 16).write(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let err = header(&path).unwrap_err().to_string();
        assert!(err.contains("23 bytes, but 4 models × 16 documents need 24"), "{err}");
        std::fs::write(&path, b"nonsense nonsense").unwrap();
        assert!(header(&path).unwrap_err().to_string().contains("bad magic"));
    }
}
