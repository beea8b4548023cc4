//! What the report's sections share: its widths and colours, the colours of sources, and how
//! a number, a time and a document's text are shown.

use std::time::SystemTime;

use maud::{Markup, html};

use crate::summary::{SourceRow, Summary};

/// Scatter plots draw at most this many documents (every k-th beyond), to keep pages light.
pub(super) const MAX_POINTS: usize = 4000;
/// Characters of a document's text in its row, before it is opened: a page has room for
/// twice the printed summary's.
pub(super) const PREVIEW_CHARS: usize = 120;
/// Text shown when a document's row is opened; longer documents are cut here.
pub(super) const FULL_TEXT_CHARS: usize = 2000;
/// Okabe–Ito colours, told apart with colour-vision deficiencies too.
pub(super) const PALETTE: [&str; 8] =
    ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#8C7A00", "#000000"];
/// The normal quantile of a two-sided 95% interval.
pub(super) const Z95: f64 = 1.96;

/// The legend of lines coloured in palette order, one per name.
pub(super) fn palette_legend<'a>(names: impl Iterator<Item = &'a str>) -> Markup {
    html! {
        ul class="legend" {
            @for (i, name) in names.enumerate() {
                li { span class="swatch" style=(format!("background:{}", PALETTE[i % PALETTE.len()])) {} (name) }
            }
        }
    }
}

/// A colour per source, in the order of the summary's sources.
pub(super) struct SourceColors<'a> {
    names: Vec<&'a str>,
}

impl<'a> SourceColors<'a> {
    pub(super) fn new(summary: &'a Summary) -> SourceColors<'a> {
        SourceColors { names: summary.sources.iter().map(SourceRow::label).collect() }
    }

    pub(super) fn of(&self, name: &str) -> &'static str {
        let index = self.names.iter().position(|&n| n == name).unwrap_or(0);
        PALETTE[index % PALETTE.len()]
    }

    pub(super) fn legend(&self) -> Markup {
        html! {
            ul class="legend" {
                @for name in &self.names {
                    li { span class="swatch" style=(format!("background:{}", self.of(name))) {} (name) }
                }
            }
        }
    }
}

pub(super) fn signed(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_string(), |v| format!("{v:+.3}"))
}

pub(super) fn unsigned(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_string(), |v| format!("{v:.3}"))
}

pub(super) fn time(value: Option<SystemTime>) -> String {
    value.map_or_else(
        || "–".to_string(),
        |t| chrono::DateTime::<chrono::Utc>::from(t).format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// The document as written (line breaks kept), cut at [`FULL_TEXT_CHARS`].
pub(super) fn preview_block(text: &str) -> String {
    let total = text.chars().count();
    if total <= FULL_TEXT_CHARS {
        return text.to_string();
    }
    let cut: String = text.chars().take(FULL_TEXT_CHARS).collect();
    format!("{cut}\n… ({} more characters)", total - FULL_TEXT_CHARS)
}
