//! Turning text into the token ids a model reads: bytes, a byte-level BPE trained on the
//! run's text at plan time, or a user's Hugging Face `tokenizer.json`.
//!
//! Token ids `0..vocab` are the tokenizer's; a model trained from scratch embeds two more
//! ([`Tokenizer::layout`]), BOS (`vocab`), which starts every document, and PAD
//! (`vocab + 1`), which fills a batch row and is never a target; a base model brings its own
//! ([`crate::base`]). The tokenizer's own special tokens are never added: a document is
//! exactly its text's tokens.
//!
//! Training the BPE on the whole corpus, documents that some models leave out included,
//! does not bias IN − OUT: the tokenizer is one fixed function of the corpus that every
//! model shares, whatever its subset, so a document is cut into the same tokens for the
//! models that train on it and for those that do not. What differs between IN and OUT
//! models is only whether they trained on the document, which is what mem(x) compares.

use std::path::Path;

use rayon::prelude::*;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{TokenizerBuilder, TokenizerImpl};

use crate::config::{EmbeddingLayout, ModelConfig, RunConfig, TokenizerChoice};
use crate::corpus::Document;
use crate::layout::RunDir;
use crate::schema::{self, BackgroundTable, CorpusTable};
use crate::{Error, Result, corpus};

/// How a document is named in a message: by its id.
fn document_name(document: &Document) -> String {
    format!("document \"{}\"", document.id)
}

/// Refuses an encoding of `text` that leaves a character out or maps it to the tokenizer's
/// unknown token, naming the character and its byte offset.
fn check_represented(tokenizer: &tokenizers::Tokenizer, text: &str, encoding: &tokenizers::Encoding) -> Result<()> {
    let unknown = match tokenizer.get_model() {
        tokenizers::ModelWrapper::BPE(bpe) => bpe.get_unk_token().as_ref().and_then(|unk| tokenizer.token_to_id(unk)),
        tokenizers::ModelWrapper::WordPiece(wordpiece) => tokenizer.token_to_id(&wordpiece.unk_token),
        tokenizers::ModelWrapper::WordLevel(wordlevel) => tokenizer.token_to_id(&wordlevel.unk_token),
        tokenizers::ModelWrapper::Unigram(_) => None,
    };
    let offsets = encoding.get_offsets();
    if let Some(position) = unknown.and_then(|unk| encoding.get_ids().iter().position(|&id| id == unk)) {
        let (start, end) = offsets[position];
        return Err(Error::Invalid(format!(
            "the tokenizer has no token for {:?} (byte {start}): it becomes the unknown token",
            text.get(start..end).unwrap_or("")
        )));
    }
    let mut covered = vec![false; text.len()];
    for &(start, end) in offsets {
        covered[start.min(text.len())..end.min(text.len())].iter_mut().for_each(|c| *c = true);
    }
    match text.char_indices().find(|&(at, c)| !c.is_whitespace() && !covered[at]) {
        Some((at, c)) => Err(Error::Invalid(format!(
            "the tokenizer drops {c:?} (byte {at}): it has no token for it, no byte fallback and no unknown token"
        ))),
        None => Ok(()),
    }
}

/// Pairs seen fewer times than this are never merged, so the trained vocabulary can be
/// smaller than `vocab_size` on a small corpus.
const MIN_PAIR_FREQUENCY: u64 = 2;

type BpeTokenizer = TokenizerImpl<BPE, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>;

pub enum Tokenizer {
    /// Each byte of the UTF-8 text is a token: vocabulary 256.
    Bytes,
    Bpe {
        tokenizer: Box<tokenizers::Tokenizer>,
        /// One more than the largest id the tokenizer can produce.
        vocab: u32,
    },
}

/// A document's tokens, at most the cap, and how many bytes of its text they cover.
pub struct Tokens {
    pub ids: Vec<u32>,
    /// Bytes of the text the tokens stand for: all of it unless the cap cut it.
    pub bytes: usize,
    pub capped: bool,
}

impl Tokenizer {
    /// The tokenizer `model` asks for, before a run exists: a BPE is trained on `texts`,
    /// a `tokenizer.json` path is read.
    pub fn for_plan<'a>(model: &ModelConfig, texts: impl Iterator<Item = &'a str> + Send) -> Result<Tokenizer> {
        match &model.tokenizer {
            TokenizerChoice::Bytes => Ok(Tokenizer::Bytes),
            &TokenizerChoice::Bpe { vocab_size } => Tokenizer::train(texts, vocab_size),
            TokenizerChoice::File(path) => Tokenizer::from_file(Path::new(path)),
        }
    }

    /// The vocabulary `model` asks for, without a run or a corpus: a BPE still to train is
    /// taken at its full `vocab_size`.
    pub fn planned_vocab(model: &ModelConfig) -> Result<u32> {
        match &model.tokenizer {
            TokenizerChoice::Bytes => Ok(Tokenizer::Bytes.vocab()),
            &TokenizerChoice::Bpe { vocab_size } => Ok(vocab_size),
            TokenizerChoice::File(path) => Ok(Tokenizer::from_file(Path::new(path))?.vocab()),
        }
    }

    /// The tokenizer of a planned run: bytes, or `RUN/tokenizer.json`, which must be the
    /// file the plan wrote.
    pub fn for_run(run: &RunDir, config: &RunConfig) -> Result<Tokenizer> {
        let Some(expected) = &config.tokens.tokenizer_sha256 else {
            return Ok(Tokenizer::Bytes);
        };
        let path = run.tokenizer();
        let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
        let found = corpus::sha256_hex(&bytes);
        if &found != expected {
            return Err(Error::file(
                &path,
                format!("sha256 {found} is not the {expected} run.toml recorded: the file was changed after planning"),
            ));
        }
        Tokenizer::from_json(&path, &bytes)
    }

    /// A byte-level BPE of at most `vocab_size` tokens (the 256 bytes included) trained on
    /// `texts`. Training is deterministic: the same texts give the same file.
    pub fn train<'a>(texts: impl Iterator<Item = &'a str> + Send, vocab_size: u32) -> Result<Tokenizer> {
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size as usize)
            .min_frequency(MIN_PAIR_FREQUENCY)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut tokenizer: BpeTokenizer = TokenizerBuilder::new()
            .with_model(BPE::default())
            .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false).into()))
            .with_decoder(Some(ByteLevel::default().into()))
            .build()
            .map_err(|e| Error::Invalid(format!("building the BPE tokenizer: {e}")))?;
        tokenizer.train(&mut trainer, texts).map_err(|e| Error::Invalid(format!("training the BPE tokenizer: {e}")))?;
        Ok(Tokenizer::bpe(tokenizer.into()))
    }

    /// A Hugging Face `tokenizer.json` file.
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let bytes = std::fs::read(path).map_err(Error::io(path))?;
        Tokenizer::from_json(path, &bytes)
    }

    fn from_json(path: &Path, bytes: &[u8]) -> Result<Tokenizer> {
        let tokenizer = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| Error::file(path, format!("not a Hugging Face tokenizer.json: {e}")))?;
        if tokenizer.get_vocab_size(true) == 0 {
            return Err(Error::file(path, "the tokenizer has an empty vocabulary"));
        }
        Ok(Tokenizer::bpe(tokenizer))
    }

    fn bpe(tokenizer: tokenizers::Tokenizer) -> Tokenizer {
        let vocab = tokenizer.get_vocab(true).values().max().map_or(0, |&id| id + 1);
        Tokenizer::Bpe { tokenizer: Box::new(tokenizer), vocab }
    }

    /// The tokenizer's file, for `RUN/tokenizer.json`; None for bytes.
    pub fn to_json(&self) -> Option<String> {
        match self {
            Tokenizer::Bytes => None,
            Tokenizer::Bpe { tokenizer, .. } => {
                Some(tokenizer.to_string(false).expect("a loaded tokenizer always serializes"))
            }
        }
    }

    /// Token ids a text can hold: `0..vocab`.
    pub fn vocab(&self) -> u32 {
        match self {
            Tokenizer::Bytes => 256,
            Tokenizer::Bpe { vocab, .. } => *vocab,
        }
    }

    /// A model's embedding over this tokenizer, trained from scratch: the vocabulary, then
    /// BOS and PAD.
    pub fn layout(&self) -> EmbeddingLayout {
        EmbeddingLayout::after_vocab(self.vocab())
    }

    /// The tokenizer as a Hugging Face `tokenizer.json`, byte tokens included: 256
    /// byte-level tokens without merges, token `b` standing for byte `b`, so that any
    /// reader of the format cuts text into exactly cfmem's byte tokens.
    pub fn file_json(&self) -> String {
        match self.to_json() {
            Some(json) => json,
            None => {
                let vocab: tokenizers::models::bpe::Vocab =
                    byte_chars().iter().enumerate().map(|(byte, c)| (c.to_string(), byte as u32)).collect();
                let model =
                    BPE::builder().vocab_and_merges(vocab, vec![]).build().expect("256 single-character tokens");
                // Without the pre-tokenizer's regex: with no merges, only bytes matter.
                let level = ByteLevel::default().add_prefix_space(false).use_regex(false);
                let tokenizer: BpeTokenizer = TokenizerBuilder::new()
                    .with_model(model)
                    .with_pre_tokenizer(Some(level.into()))
                    .with_decoder(Some(level.into()))
                    .build()
                    .expect("a complete byte-level tokenizer");
                tokenizers::Tokenizer::from(tokenizer).to_string(false).expect("a tokenizer always serializes")
            }
        }
    }

    /// The tokens of `text`, at most `cap` of them. Text the tokenizer cannot represent —
    /// characters it drops (a BPE with neither byte fallback nor an unknown token) or maps
    /// to its unknown token — is refused, naming the character and where it is: the model
    /// would never see it, and its score would be about other text.
    pub fn encode(&self, text: &str, cap: Option<u32>) -> Result<Tokens> {
        let cap = cap.map_or(usize::MAX, |c| c as usize);
        match self {
            Tokenizer::Bytes => {
                let ids: Vec<u32> = text.bytes().take(cap).map(u32::from).collect();
                Ok(Tokens { bytes: ids.len(), capped: ids.len() < text.len(), ids })
            }
            Tokenizer::Bpe { tokenizer, .. } => {
                let encoding = tokenizer.encode(text, false).map_err(|e| Error::Invalid(format!("tokenizer: {e}")))?;
                check_represented(tokenizer, text, &encoding)?;
                let mut ids = encoding.get_ids().to_vec();
                if ids.len() <= cap {
                    return Ok(Tokens { ids, bytes: text.len(), capped: false });
                }
                ids.truncate(cap);
                // Offsets are byte offsets into `text`; tokens of one multi-byte character
                // share its span, so the cut never splits a character.
                let bytes = cap.checked_sub(1).map_or(0, |last| encoding.get_offsets()[last].1);
                Ok(Tokens { ids, bytes, capped: true })
            }
        }
    }

    /// `each` of the tokens of every text, computed in parallel; an error names the text
    /// with `name(index)`.
    fn map_all<S: AsRef<str> + Sync, T: Send>(
        &self,
        texts: &[S],
        cap: Option<u32>,
        name: &(dyn Fn(usize) -> String + Sync),
        each: impl Fn(Tokens) -> T + Sync,
    ) -> Result<Vec<T>> {
        texts
            .par_iter()
            .enumerate()
            .map(|(i, text)| {
                self.encode(text.as_ref(), cap).map(&each).map_err(|e| {
                    let problem = match e {
                        Error::Invalid(problem) => problem,
                        other => other.to_string(),
                    };
                    Error::Invalid(format!("{}: {problem}", name(i)))
                })
            })
            .collect()
    }

    /// The token ids of every document, an error naming the document by its id.
    pub fn encode_documents(&self, documents: &[Document], cap: Option<u32>) -> Result<Vec<Vec<u32>>> {
        let texts: Vec<&str> = documents.iter().map(|d| d.text.as_str()).collect();
        self.map_all(&texts, cap, &|i| document_name(&documents[i]), |tokens| tokens.ids)
    }

    /// How many tokens every document has, without keeping them; an error names the
    /// document by its id.
    pub fn measure_documents(&self, documents: &[Document], cap: Option<u32>) -> Result<Vec<Extent>> {
        let texts: Vec<&str> = documents.iter().map(|d| d.text.as_str()).collect();
        self.map_all(&texts, cap, &|i| document_name(&documents[i]), |tokens| Extent {
            tokens: tokens.ids.len() as u32,
            bytes: tokens.bytes,
            capped: tokens.capped,
        })
    }

    /// The token ids of every text; an error names the text by its index.
    pub fn encode_all<S: AsRef<str> + Sync>(&self, texts: &[S], cap: Option<u32>) -> Result<Vec<Vec<u32>>> {
        self.map_all(texts, cap, &|i| format!("document {i}"), |tokens| tokens.ids)
    }

    /// The token ids of a planned run's documents (`corpus`, its `corpus.parquet`) and of its
    /// background, each checked against the count the plan stored: a different count means
    /// the text changed since planning.
    pub fn encode_run(&self, run: &RunDir, config: &RunConfig, corpus: &CorpusTable) -> Result<RunTokens> {
        let cap = config.model.max_tokens_per_doc;
        let documents = self.encode_planned(&corpus.text, cap, &corpus.tokens, &run.corpus())?;
        let background = match config.background {
            None => Vec::new(),
            Some(_) => {
                let table: BackgroundTable = schema::read(&run.background())?;
                self.encode_planned(&table.text, cap, &table.tokens, &run.background())?
            }
        };
        Ok(RunTokens { documents, background })
    }

    fn encode_planned(
        &self,
        texts: &[String],
        cap: Option<u32>,
        planned: &[u32],
        table: &Path,
    ) -> Result<Vec<Vec<u32>>> {
        let ids = self.encode_all(texts, cap)?;
        match ids.iter().zip(planned).position(|(ids, &planned)| ids.len() != planned as usize) {
            None => Ok(ids),
            Some(row) => Err(Error::Row {
                path: table.to_path_buf(),
                row,
                message: format!(
                    "the text has {} tokens, but the plan counted {}: the tokenizer or the text changed since planning",
                    ids[row].len(),
                    planned[row]
                ),
            }),
        }
    }
}

/// The character GPT-2's byte-level tokenizers write for each byte: printable Latin-1
/// characters stand for themselves, the other 68 bytes for the characters from U+0100 on,
/// in byte order. (The `tokenizers` crate keeps its copy of this map private.)
fn byte_chars() -> [char; 256] {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 0x100;
    std::array::from_fn(|byte| {
        let byte = byte as u8;
        if printable(byte) {
            char::from(byte)
        } else {
            next += 1;
            char::from_u32(next - 1).expect("below U+0200")
        }
    })
}

/// A text's token count, and how many bytes of it those tokens cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub tokens: u32,
    /// Bytes of the text the tokens stand for: all of it unless the cap cut it.
    pub bytes: usize,
    pub capped: bool,
}

/// The token ids a run's models train and are evaluated on.
pub struct RunTokens {
    /// Every document of `corpus.parquet`, in order.
    pub documents: Vec<Vec<u32>>,
    /// Every document of `background.parquet`; empty without a background.
    pub background: Vec<Vec<u32>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "The cat sat on the mat. The cat sat on the hat. The dog sat on the log. ";

    fn trained() -> Tokenizer {
        Tokenizer::train(std::iter::repeat_n(TEXT, 20), 300).unwrap()
    }

    #[test]
    fn bytes_are_tokens_and_the_cap_cuts_bytes() {
        let tokens = Tokenizer::Bytes.encode("héllo", Some(3)).unwrap();
        assert_eq!(tokens.ids, [104, 195, 169]);
        assert_eq!((tokens.bytes, tokens.capped), (3, true));
        let all = Tokenizer::Bytes.encode("hi", None).unwrap();
        assert_eq!((all.ids, all.bytes, all.capped), (vec![104, 105], 2, false));
        assert_eq!(Tokenizer::Bytes.layout(), EmbeddingLayout { rows: 258, bos: 256, pad: 257 });
    }

    #[test]
    fn byte_tokens_written_as_a_tokenizer_file_read_back_as_the_same_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, Tokenizer::Bytes.file_json()).unwrap();
        let read = Tokenizer::from_file(&path).unwrap();
        assert_eq!(read.vocab(), 256);
        let text = "Tab\there, ünïcødé € and 🙂, spaces  and\nnewlines <|endoftext|>";
        assert_eq!(read.encode(text, None).unwrap().ids, Tokenizer::Bytes.encode(text, None).unwrap().ids);
        let all: String = (0u8..128).map(char::from).collect();
        assert_eq!(read.encode(&all, None).unwrap().ids, (0..128).collect::<Vec<u32>>());
    }

    #[test]
    fn bpe_training_is_deterministic_and_merges_frequent_words() {
        let a = trained();
        assert_eq!(a.to_json(), trained().to_json());
        let tokens = a.encode("The cat sat on the mat.", None).unwrap();
        assert!(tokens.ids.len() < 12, "{:?}", tokens.ids);
        assert!(tokens.ids.iter().all(|&id| id < a.vocab()));
        assert!(a.vocab() > 256 && a.vocab() <= 300, "{}", a.vocab());
    }

    #[test]
    fn bpe_cap_keeps_whole_characters() {
        let bpe = trained();
        let text = "é€ cat";
        let all = bpe.encode(text, None).unwrap();
        let capped = bpe.encode(text, Some(2)).unwrap();
        assert_eq!(capped.ids, all.ids[..2]);
        assert!(capped.capped);
        assert!(text.is_char_boundary(capped.bytes), "{}", capped.bytes);
    }

    #[test]
    fn a_saved_tokenizer_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        let bpe = trained();
        std::fs::write(&path, bpe.to_json().unwrap()).unwrap();
        let read = Tokenizer::from_file(&path).unwrap();
        assert_eq!(read.to_json(), bpe.to_json());
        assert_eq!(read.encode(TEXT, None).unwrap().ids, bpe.encode(TEXT, None).unwrap().ids);
    }

    #[test]
    fn a_text_that_is_not_the_planned_tokens_is_refused_with_its_row() {
        let texts = ["abc".to_string(), "changed".to_string()];
        let err = Tokenizer::Bytes.encode_planned(&texts, None, &[3, 4], Path::new("corpus.parquet")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "corpus.parquet: row 1: the text has 7 tokens, but the plan counted 4: \
             the tokenizer or the text changed since planning"
        );
        assert_eq!(
            Tokenizer::Bytes.encode_planned(&texts, Some(3), &[3, 3], Path::new("c")).unwrap()[1],
            [99, 104, 97]
        );
    }

    #[test]
    fn a_malformed_tokenizer_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.json");
        std::fs::write(&path, "{\"model\": 3}").unwrap();
        let err = Tokenizer::from_file(&path).err().unwrap().to_string();
        assert!(err.contains("broken.json: not a Hugging Face tokenizer.json"), "{err}");
        let empty = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
            "pre_tokenizer":null,"post_processor":null,"decoder":null,"model":{"type":"BPE","vocab":{},"merges":[]}}"#;
        std::fs::write(&path, empty).unwrap();
        let err = Tokenizer::from_file(&path).err().unwrap().to_string();
        assert!(err.ends_with("broken.json: the tokenizer has an empty vocabulary"), "{err}");
    }

    /// A BPE over the letters a, b, c and the pair "ab", with `<unk>` (id 0) and `<s>`
    /// (id 1), and the 256 byte tokens when `byte_fallback`; its post-processor adds `<s>`.
    fn sentencepiece_like(unknown: bool, byte_fallback: bool) -> Tokenizer {
        let mut vocab: Vec<(String, u32)> =
            ["<unk>", "<s>", "a", "b", "c", "ab"].iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect();
        if byte_fallback {
            vocab.extend((0..=255u32).map(|b| (format!("<0x{b:02X}>"), 6 + b)));
        }
        let mut model = BPE::builder()
            .vocab_and_merges(
                vocab.into_iter().collect::<tokenizers::models::bpe::Vocab>(),
                vec![("a".into(), "b".into())],
            )
            .byte_fallback(byte_fallback);
        if unknown {
            model = model.unk_token("<unk>".into());
        }
        let mut tokenizer = tokenizers::Tokenizer::new(model.build().unwrap());
        let template = tokenizers::processors::template::TemplateProcessing::builder()
            .try_single("<s> $A")
            .unwrap()
            .special_tokens(vec![("<s>", 1)])
            .build()
            .unwrap();
        tokenizer.with_post_processor(Some(template));
        Tokenizer::bpe(tokenizer)
    }

    #[test]
    fn a_post_processor_that_adds_bos_adds_nothing_to_a_document() {
        let tokenizer = sentencepiece_like(true, true);
        let Tokenizer::Bpe { tokenizer: inner, .. } = &tokenizer else { unreachable!("a BPE") };
        assert_eq!(inner.encode("abc", true).unwrap().get_ids(), [1, 5, 4], "the post-processor adds <s>");
        assert_eq!(tokenizer.encode("abc", None).unwrap().ids, [5, 4], "a document is its text's tokens alone");
    }

    #[test]
    fn text_the_tokenizer_cannot_represent_is_refused_naming_the_document_and_the_character() {
        // With byte fallback, an unknown character becomes its UTF-8 bytes.
        let bytes = sentencepiece_like(true, true).encode("abé", None).unwrap();
        assert_eq!(bytes.ids, [5, 6 + 0xC3, 6 + 0xA9]);
        let documents = |text: &str| {
            vec![
                Document { id: "fine".into(), text: "abc".into(), source: None },
                Document { id: "doc-7".into(), text: text.into(), source: None },
            ]
        };
        let unknown = sentencepiece_like(true, false).encode_documents(&documents("abé"), None).unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "invalid setting: document \"doc-7\": the tokenizer has no token for \"é\" (byte 2): it becomes the \
             unknown token"
        );
        let dropped = sentencepiece_like(false, false).measure_documents(&documents("abcx"), None).unwrap_err();
        assert_eq!(
            dropped.to_string(),
            "invalid setting: document \"doc-7\": the tokenizer drops 'x' (byte 3): it has no token for it, no \
             byte fallback and no unknown token"
        );
        assert_eq!(sentencepiece_like(false, false).measure_documents(&documents("cab"), None).unwrap()[1].tokens, 2);
    }
}
