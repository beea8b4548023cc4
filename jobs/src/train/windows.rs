//! Documents as batch rows: each cut into windows of at most `context − 1` tokens
//! ([`windows`]), padded into input and target rows ([`padded`], [`token_table`]), and a
//! stack's training rows held on the device ([`TrainingTable`]) with each model's endless
//! stream of reshuffled examples ([`ExampleStream`]).

use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};

use subsets::architecture::Architecture;

/// The target of a padded position: no token id, so that a base whose PAD is one of its
/// tokens (its BOS) still never masks a real target of that token.
pub(crate) const NO_TARGET: i64 = -100;

/// At most `context − 1` consecutive tokens `doc[start..end]` of a document, one batch row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window<'a> {
    pub(crate) doc: &'a [u32],
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl Window<'_> {
    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }
}

/// The windows of `doc`, `span` tokens each but the last.
pub(crate) fn windows(doc: &[u32], span: usize) -> impl Iterator<Item = Window<'_>> {
    (0..doc.len()).step_by(span).map(move |start| Window { doc, start, end: (start + span).min(doc.len()) })
}

/// The two tokens a model reads besides the text's (either may be one of the text's tokens
/// too: a base's BOS is its end-of-text token).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Specials {
    pub(crate) bos: i64,
    pub(crate) pad: i64,
}

impl Specials {
    pub(crate) fn of(architecture: &Architecture) -> Specials {
        Specials { bos: architecture.bos(), pad: architecture.pad() }
    }
}

/// Padded `[rows, longest]` inputs and targets of `windows`, on the host.
pub(crate) fn padded(windows: &[Window<'_>], longest: usize, specials: Specials) -> (Vec<i64>, Vec<i64>) {
    let mut inputs = Vec::with_capacity(windows.len() * longest);
    let mut targets = Vec::with_capacity(windows.len() * longest);
    for w in windows {
        inputs.push(if w.start == 0 { specials.bos } else { i64::from(w.doc[w.start - 1]) });
        inputs.extend(w.doc[w.start..w.end - 1].iter().map(|&t| i64::from(t)));
        targets.extend(w.doc[w.start..w.end].iter().map(|&t| i64::from(t)));
        let padding = longest - w.len();
        inputs.extend(std::iter::repeat_n(specials.pad, padding));
        targets.extend(std::iter::repeat_n(NO_TARGET, padding));
    }
    (inputs, targets)
}

/// Input and target token tensors `[rows, longest]` of `windows` on `device`.
pub(crate) fn token_table(windows: &[Window<'_>], specials: Specials, device: Device) -> (Tensor, Tensor) {
    let longest = windows.iter().map(Window::len).max().unwrap_or(0);
    let (inputs, targets) = padded(windows, longest, specials);
    let shape = [windows.len() as i64, longest as i64];
    (Tensor::from_slice(&inputs).view(shape).to(device), Tensor::from_slice(&targets).view(shape).to(device))
}

/// A model's training examples (rows of its documents' windows, repeated by copies) served
/// as an endless stream of reshuffled passes.
pub(crate) struct ExampleStream {
    examples: Vec<i64>,
    next: usize,
    rng: ChaCha8Rng,
}

impl ExampleStream {
    pub(crate) fn new(examples: Vec<i64>, rng: ChaCha8Rng) -> ExampleStream {
        ExampleStream { next: examples.len(), examples, rng }
    }

    /// Draws and drops `count` examples: the stream as it is after that many draws.
    pub(crate) fn skip(&mut self, count: usize) {
        for _ in 0..count {
            self.take();
        }
    }

    pub(crate) fn take(&mut self) -> i64 {
        if self.next == self.examples.len() {
            self.examples.shuffle(&mut self.rng);
            self.next = 0;
        }
        self.next += 1;
        self.examples[self.next - 1]
    }
}

/// The windows a stack trains on as device tensors: inputs and targets `[rows, longest]`,
/// and each row's length, which bounds a batch's time dimension.
pub(crate) struct TrainingTable {
    pub(crate) inputs: Tensor,
    pub(crate) targets: Tensor,
    pub(crate) lengths: Vec<usize>,
}

impl TrainingTable {
    pub(crate) fn new(windows: &[Window<'_>], specials: Specials, device: Device) -> TrainingTable {
        let (inputs, targets) = token_table(windows, specials, device);
        TrainingTable { inputs, targets, lengths: windows.iter().map(Window::len).collect() }
    }

    /// The table of every window of `documents` (each `span` tokens but a document's last).
    pub(crate) fn of_documents(
        documents: &[&[u32]],
        span: usize,
        architecture: &Architecture,
        device: Device,
    ) -> TrainingTable {
        let all: Vec<Window<'_>> = documents.iter().flat_map(|doc| windows(doc, span)).collect();
        TrainingTable::new(&all, Specials::of(architecture), device)
    }

    /// Rows of the table.
    pub(crate) fn rows(&self) -> usize {
        self.lengths.len()
    }
}
