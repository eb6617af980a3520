use super::*;

/// Rows of random word ids (≥ 5) framed by [CLS] … [SEP].
fn rows(n: usize, seq: usize, vocab: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = SplitMix(seed);
    let docs: Vec<Vec<u32>> = (0..n)
        .map(|_| {
            (0..seq)
                .map(|_| (SPECIALS.len() + rng.below(vocab - SPECIALS.len())) as u32)
                .collect()
        })
        .collect();
    pack_sequences(&docs, seq).unwrap()
}

#[test]
fn packing_frames_rows_and_joins_documents_with_sep() {
    let docs = vec![vec![10, 11, 12], vec![13, 14], vec![15]];
    // stream: 10 11 12 SEP 13 14 SEP 15 → chunks of 3, the tail (15) dropped
    let r = pack_sequences(&docs, 5).unwrap();
    assert_eq!(
        r,
        vec![
            vec![CLS_ID, 10, 11, 12, SEP_ID],
            vec![CLS_ID, SEP_ID, 13, 14, SEP_ID]
        ]
    );
    assert!(pack_sequences(&docs, 2).is_err());
}

#[test]
fn masking_statistics_are_berts() {
    let vocab = 1000;
    let data = rows(400, 128, vocab, 7);
    let (mut scored, mut maskable, mut masked, mut random, mut kept) = (0, 0, 0, 0, 0);
    for (i, r) in data.iter().enumerate() {
        let (ids, labels) = mask_row(r, vocab, &mut mask_key(3, 0, i));
        for k in 0..r.len() {
            maskable += usize::from(r[k] as usize >= SPECIALS.len());
            if labels[k] == IGNORE_LABEL {
                assert_eq!(ids[k], r[k] as i64, "unscored positions are untouched");
                continue;
            }
            assert_eq!(labels[k], r[k] as i64);
            assert!(
                r[k] != CLS_ID && r[k] != SEP_ID,
                "specials are never scored"
            );
            scored += 1;
            match ids[k] {
                x if x == MASK_ID as i64 => masked += 1,
                x if x == r[k] as i64 => kept += 1,
                x => {
                    assert!((SPECIALS.len() as i64..vocab as i64).contains(&x));
                    random += 1
                }
            }
        }
    }
    // ~6,300 scored of ~50,000: the binomial standard deviations are ≈ 0.16% of the positions
    // and ≈ 0.5% / 0.4% of the scored; the bounds are over 4σ wide.
    let frac = |a: usize, b: usize| a as f64 / b as f64;
    assert!(
        (0.14..0.16).contains(&frac(scored, maskable)),
        "{scored}/{maskable}"
    );
    assert!(
        (0.78..0.82).contains(&frac(masked, scored)),
        "{masked}/{scored}"
    );
    // A random draw equal to the original counts as kept (p = 1/995), within the bounds.
    assert!(
        (0.085..0.115).contains(&frac(random, scored)),
        "{random}/{scored}"
    );
    assert!(
        (0.085..0.115).contains(&frac(kept, scored)),
        "{kept}/{scored}"
    );
}

#[test]
fn every_row_has_a_scored_position() {
    let data = rows(50, 4, 30, 1);
    for (i, r) in data.iter().enumerate() {
        let (_, labels) = mask_row(r, 30, &mut mask_key(0, 0, i));
        assert!(labels.iter().any(|&l| l != IGNORE_LABEL), "row {i}");
    }
}

#[test]
fn a_restored_loader_continues_with_the_same_batches() {
    let data = rows(3, 16, 200, 2);
    let cfg = MlmConfig {
        batch: 3,
        seed: 9,
        vocab: 200,
    };
    let a = MlmLoader::new(data.clone(), cfg).unwrap();
    // 3 documents of 16 ids pack into 3 rows of 14 words (50 ids with 2 [SEP]); with 4
    // documents worth of rows the epoch is short: check the count, then cross into epoch 1.
    assert_eq!((data.len(), a.batches_per_epoch()), (3, 1));
    let data = rows(13, 14, 200, 2);
    let mut a = MlmLoader::new(data.clone(), cfg).unwrap();
    assert_eq!(a.batches_per_epoch(), data.len() / 3);
    let per = a.batches_per_epoch();
    let first: Vec<_> = (0..per + 2).map(|_| a.next_step_batch()).collect();
    let pos = a.data_position();
    assert_eq!((pos.epoch, pos.index), (1, 6));
    let rest: Vec<_> = (0..5).map(|_| a.next_step_batch()).collect();
    let mut b = MlmLoader::restore(data.clone(), cfg, pos).unwrap();
    let again: Vec<_> = (0..5).map(|_| b.next_step_batch()).collect();
    assert_eq!(rest, again);
    // Same rows in another epoch are masked differently; another seed, another batch.
    assert_ne!(first[0], first[per]);
    let other = MlmConfig { seed: 10, ..cfg };
    assert_ne!(
        MlmLoader::new(data.clone(), other)
            .unwrap()
            .next_step_batch(),
        first[0]
    );
    let b0 = &first[0];
    assert_eq!(b0.inputs.len(), 4);
    assert_eq!(b0.labels.shape, vec![3, 14]);
    assert_eq!(b0.tokens, Some(42));
    assert_eq!(b0.inputs[2].as_i64().unwrap()[14..17], [0, 1, 2]);
}

#[test]
fn validation_is_masked_once_and_padded_to_full_batches() {
    let data = rows(7, 8, 100, 4);
    let v = TextValidation::new(&data, 100, 5);
    assert_eq!(v, TextValidation::new(&data, 100, 5));
    let cfg = MlmConfig {
        batch: 3,
        seed: 5,
        vocab: 100,
    };
    let loader = MlmLoader::new(data.clone(), cfg).unwrap();
    let batches = loader.validation_batches(&v, 3);
    let real: Vec<usize> = batches.iter().map(|b| b.1).collect();
    assert_eq!((data.len(), real), (10, vec![3, 3, 3, 1]));
    assert_eq!(batches[3].0.labels.shape, vec![3, 8]);
    assert!(MlmLoader::new(data, MlmConfig { batch: 11, ..cfg }).is_err());
}
