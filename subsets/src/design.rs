//! Balanced membership designs.
//!
//! Every unit (a document, or a near-duplicate cluster) is IN for exactly
//! `round(keep × models)` models and OUT for the rest, the IN models being a seeded uniform
//! draw per unit (the keep masks of LiRA). Exact balance per unit means every document has
//! the same number of IN and OUT observations, so its two means have equal footing.

use rand::seq::SliceRandom;
use rand::seq::index;

use crate::{Error, Result, seeds};

/// Number of models each unit is IN for, or an error when some unit could not be both IN
/// and OUT at least once.
pub fn in_count(models: u32, keep: f64) -> Result<u32> {
    if !(keep > 0.0 && keep < 1.0) {
        return Err(Error::setting("design.keep", format!("must be strictly between 0 and 1, got {keep}")));
    }
    let k = (keep * f64::from(models)).round() as u32;
    if k == 0 || k >= models {
        let needed = (2..)
            .find(|&m| {
                let k = (keep * f64::from(m)).round() as u32;
                k >= 1 && k < m
            })
            .expect("some model count works for keep in (0, 1)");
        return Err(Error::setting(
            "design.models",
            format!(
                "too few models: with {models} models and keep {keep} each document would be IN for \
                 {k} of {models} models, but it must be IN at least once and OUT at least once; \
                 {needed} models or more are needed"
            ),
        ));
    }
    Ok(k)
}

/// For each of `units` units, the sorted models it is IN for.
pub fn balanced(units: usize, models: u32, keep: f64, seed: u64) -> Result<Vec<Vec<u32>>> {
    let k = in_count(models, keep)?;
    Ok((0..units)
        .map(|unit| {
            let mut chosen = in_models(unit, models, k, seed);
            chosen.sort_unstable();
            chosen
        })
        .collect())
}

/// The `k` of `models` models unit `unit` is IN for, in draw order: the draw of
/// [`balanced`] for one unit, so a plan never holds the whole design as lists.
pub fn in_models(unit: usize, models: u32, k: u32, seed: u64) -> Vec<u32> {
    in_models_of("design", unit, models, k, seed)
}

/// [`in_models`] from the seed stream `stream`: each block of a spectrum run draws from
/// its own.
pub fn in_models_of(stream: &str, unit: usize, models: u32, k: u32, seed: u64) -> Vec<u32> {
    let mut rng = seeds::rng(seed, stream, unit as u64);
    index::sample(&mut rng, models as usize, k as usize).into_iter().map(|m| m as u32).collect()
}

/// How a run planned with `old` models grows to `new`: each unit keeps its round(keep × old)
/// IN models and gains the returned number among the new ones, so that it is IN for exactly
/// round(keep × new) models. Since round(keep × new) − round(keep × old) is never negative
/// nor above new − old for keep in (0, 1), the balance is always exact.
pub fn extension_in_count(old: u32, new: u32, keep: f64) -> Result<u32> {
    if new <= old {
        return Err(Error::setting("design.models", format!("{new} must be more than the run's {old} models")));
    }
    let added = in_count(new, keep)? - in_count(old, keep)?;
    debug_assert!(added <= new - old);
    Ok(added)
}

/// The new models (numbered from `old`) that unit `unit` is IN for when a run of `old`
/// models grows to `new`, `added` of them ([`extension_in_count`]), seeded by
/// (run seed, old, unit) so that each extension step draws its own.
pub fn extension_models(unit: usize, old: u32, new: u32, added: u32, seed: u64) -> Vec<u32> {
    extension_models_of(&format!("design-extend-from-{old}"), unit, old, new, added, seed)
}

/// [`extension_models`] from the seed stream `stream`, which names the step.
pub fn extension_models_of(stream: &str, unit: usize, old: u32, new: u32, added: u32, seed: u64) -> Vec<u32> {
    let mut rng = seeds::rng(seed, stream, unit as u64);
    index::sample(&mut rng, (new - old) as usize, added as usize).into_iter().map(|m| old + m as u32).collect()
}

/// A holdout fraction leaves some documents to train on.
pub fn check_holdout_fraction(fraction: f64) -> Result<()> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(Error::setting("design.holdout", format!("must be in [0, 1), got {fraction}")));
    }
    Ok(())
}

/// Which of `units` units are held out: round(fraction × units) of them, seeded.
pub fn holdout(units: usize, fraction: f64, seed: u64) -> Result<Vec<bool>> {
    check_holdout_fraction(fraction)?;
    let count = (fraction * units as f64).round() as usize;
    if count >= units {
        return Err(Error::setting(
            "design.holdout",
            format!("{fraction} would hold out all {units} units, leaving nothing to train on"),
        ));
    }
    let mut order: Vec<usize> = (0..units).collect();
    order.shuffle(&mut seeds::rng(seed, "holdout", 0));
    let mut held = vec![false; units];
    for &unit in &order[..count] {
        held[unit] = true;
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_unit_is_in_exactly_k_models_and_the_draw_repeats(
            models in 2u32..64, keep in 0.01f64..0.99, seed: u64, units in 1usize..50
        ) {
            match balanced(units, models, keep, seed) {
                Ok(design) => {
                    let k = (keep * f64::from(models)).round() as usize;
                    prop_assert!(k >= 1 && k < models as usize);
                    prop_assert_eq!(design.len(), units);
                    for chosen in &design {
                        prop_assert_eq!(chosen.len(), k);
                        prop_assert!(chosen.windows(2).all(|w| w[0] < w[1]));
                        prop_assert!(chosen.iter().all(|&m| m < models));
                    }
                    prop_assert_eq!(design, balanced(units, models, keep, seed).unwrap());
                }
                Err(e) => {
                    let k = (keep * f64::from(models)).round() as u32;
                    prop_assert!(k == 0 || k >= models);
                    prop_assert!(e.to_string().contains("too few models"));
                }
            }
        }
    }

    proptest! {
        #[test]
        fn an_extension_keeps_every_unit_exactly_balanced(
            old in 2u32..40, more in 1u32..40, keep in 0.05f64..0.95, seed: u64, unit in 0usize..1000
        ) {
            let new = old + more;
            if let (Ok(k_old), Ok(k_new)) = (in_count(old, keep), in_count(new, keep)) {
                let added = extension_in_count(old, new, keep).unwrap();
                let chosen = extension_models(unit, old, new, added, seed);
                prop_assert_eq!(k_old + chosen.len() as u32, k_new);
                prop_assert!(chosen.iter().all(|&m| (old..new).contains(&m)));
                let mut distinct = chosen.clone();
                distinct.sort_unstable();
                distinct.dedup();
                prop_assert_eq!(distinct.len(), chosen.len());
            }
        }
    }

    #[test]
    fn an_extension_must_add_models() {
        let err = extension_in_count(8, 8, 0.5).unwrap_err().to_string();
        assert_eq!(err, "design.models: 8 must be more than the run's 8 models");
    }

    #[test]
    fn too_few_models_says_how_many_are_needed() {
        let err = balanced(3, 1, 0.5, 0).unwrap_err().to_string();
        assert!(err.contains("; 2 models or more are needed"), "{err}");
        let err = balanced(3, 4, 0.9, 0).unwrap_err().to_string();
        assert!(err.contains("IN for 4 of 4 models"), "{err}");
        assert!(err.contains("; 6 models or more are needed"), "{err}");
    }

    #[test]
    fn keep_outside_open_interval_is_refused() {
        for keep in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
            let err = balanced(3, 8, keep, 0).unwrap_err().to_string();
            assert!(err.starts_with("design.keep: must be strictly between 0 and 1"), "{err}");
        }
    }

    #[test]
    fn models_are_used_evenly_over_many_units() {
        let design = balanced(4000, 8, 0.5, 7).unwrap();
        let mut per_model = [0usize; 8];
        design.iter().flatten().for_each(|&m| per_model[m as usize] += 1);
        assert!(per_model.iter().all(|&n| (1800..2200).contains(&n)), "{per_model:?}");
    }

    #[test]
    fn holdout_takes_the_rounded_fraction() {
        let held = holdout(10, 0.25, 3).unwrap();
        assert_eq!(held.iter().filter(|&&h| h).count(), 3);
        assert_eq!(held, holdout(10, 0.25, 3).unwrap());
        assert!(holdout(10, 1.0, 3).is_err());
        assert!(holdout(1, 0.6, 3).unwrap_err().to_string().contains("leaving nothing"));
    }
}
