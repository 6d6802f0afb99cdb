//! Readable-DEK checks, by principle: an attacker reads etcd (every stored ciphertext) and can
//! call nothing. What can they learn from the ciphertexts of plaintexts the suite chooses?
//!
//! Families covered, each with its own diagnosis:
//! - **encodings**: the plaintext, or any 8 of its bytes, as raw, reversed or XORed-with-one-byte
//!   bytes (inverted included), lower/upper-case hex, or base64 (standard or URL alphabet);
//! - **fixed transforms**: XOR with a fixed key or a reused keystream (a fixed nonce): two
//!   ciphertexts XOR to the XOR of their plaintexts;
//! - **structure**: plaintexts sharing their first 16 bytes give ciphertexts sharing more byte
//!   positions than unrelated ones (ECB, fixed IV, a position-wise table); a repeated 16-byte
//!   block shows as a repeated ciphertext run;
//! - **low entropy**: the ciphertext of an all-zero plaintext is less varied than a random one's
//!   (the output follows the input);
//! - **length**: the ciphertext's length depends on the content (compression), a WARN check.
//!
//! Deterministic encryption of equal plaintexts is `*.encrypt.non-deterministic`.

use std::collections::HashSet;

use base64::Engine as _;

use super::CheckResult;
use crate::context::{bytes, random};
use crate::report::Finding;

/// The window of plaintext bytes whose exposure counts (64 bits of a 256-bit DEK).
const WINDOW: usize = 8;
/// The size of the plaintexts (the apiserver's seed/DEK).
const SIZE: usize = 32;
/// How many byte positions related plaintexts may share beyond unrelated ones.
const SHARED_POSITIONS: usize = 8;

/// An Encrypt call of one API.
pub(crate) trait Encryptor {
    /// The ciphertext of `plaintext`, or the finding that Encrypt failed.
    async fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, Finding>;
    /// The request, as a finding's `sent` shows it.
    fn describe(&self, plaintext: &[u8]) -> String;
}

/// A plaintext the suite chose and what the plugin made of it.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub what: &'static str,
    pub plaintext: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// The chosen plaintexts: three random, one sharing the first's first 16 bytes, one repeating a
/// 16-byte block, one all zeros.
fn chosen() -> Vec<(&'static str, Vec<u8>)> {
    let first = random(SIZE);
    let mut related = first[..16].to_vec();
    related.extend(random(16));
    let block = random(16);
    vec![
        ("a random plaintext", first),
        ("a second random plaintext", random(SIZE)),
        ("a third random plaintext", random(SIZE)),
        ("a plaintext sharing the first one's first 16 bytes", related),
        ("a plaintext made of one random 16-byte block twice", [block.clone(), block].concat()),
        ("an all-zero plaintext", vec![0; SIZE]),
    ]
}

async fn samples(encryptor: &impl Encryptor) -> Result<Vec<Sample>, Finding> {
    let mut out = Vec::new();
    for (what, plaintext) in chosen() {
        let ciphertext = encryptor.encrypt(&plaintext).await?;
        out.push(Sample { what, plaintext, ciphertext });
    }
    Ok(out)
}

fn sent(encryptor: &impl Encryptor, samples: &[&Sample]) -> String {
    samples.iter().map(|s| format!("{} ({})", encryptor.describe(&s.plaintext), s.what)).collect::<Vec<_>>().join("; ")
}

fn received(samples: &[&Sample]) -> String {
    samples.iter().map(|s| format!("ciphertext {}", bytes(&s.ciphertext))).collect::<Vec<_>>().join("; ")
}

/// `*.encrypt.dek-not-readable`.
pub(crate) async fn dek_not_readable(encryptor: &impl Encryptor) -> CheckResult {
    let samples = match samples(encryptor).await {
        Ok(samples) => samples,
        Err(finding) => return CheckResult::fail(finding),
    };
    // An empty answer with OK (a plugin that swallowed its KMS error) exposes nothing, but it
    // loses the DEK and leaves nothing to judge: a verdict, not an analysis of zero bytes.
    if let Some(empty) = samples.iter().find(|s| s.ciphertext.is_empty()) {
        return CheckResult::fail(Finding::new(
            sent(encryptor, &[empty]),
            received(&[empty]),
            format!(
                "Encrypt of {} ({} B) answered OK with an empty ciphertext: the data key is lost (the apiserver cannot store or \
                 decrypt it), and there is nothing to judge for exposure; answer an error when the KMS call fails",
                empty.what,
                empty.plaintext.len()
            ),
        ));
    }
    match analyse(&samples) {
        Analysis { exposure: Some((involved, problem)), .. } => {
            let involved: Vec<&Sample> = involved.iter().map(|&i| &samples[i]).collect();
            CheckResult::fail(Finding::new(sent(encryptor, &involved), received(&involved), problem))
        }
        Analysis { exposure: None, notes } => notes.into_iter().fold(CheckResult::pass(), CheckResult::note),
    }
}

/// `*.encrypt.length-hides-content`.
pub(crate) async fn length_hides_content(encryptor: &impl Encryptor) -> CheckResult {
    let mut samples = Vec::new();
    for (what, plaintext) in [("a random plaintext", random(SIZE)), ("an all-zero plaintext", vec![0; SIZE])] {
        match encryptor.encrypt(&plaintext).await {
            Ok(ciphertext) => samples.push(Sample { what, plaintext, ciphertext }),
            Err(finding) => return CheckResult::fail(finding),
        }
    }
    let (random, zero) = (&samples[0], &samples[1]);
    let difference = random.ciphertext.len().abs_diff(zero.ciphertext.len());
    // A varint or DER length may move by a byte or two; compression moves it by much more.
    if difference > 2 {
        return CheckResult::fail(Finding::new(
            sent(encryptor, &[random, zero]),
            received(&[random, zero]),
            format!(
                "two 32-byte plaintexts give ciphertexts of {} and {} bytes: the length depends on the content (compression before \
                 encryption?), so etcd shows something about each plaintext",
                random.ciphertext.len(),
                zero.ciphertext.len()
            ),
        ));
    }
    CheckResult::pass().note(format!(
        "a random and an all-zero 32-byte plaintext: {} and {} bytes",
        random.ciphertext.len(),
        zero.ciphertext.len()
    ))
}

/// The verdict on a set of samples: which samples show an exposure (indices) and how, else notes.
#[derive(Debug)]
pub(crate) struct Analysis {
    pub exposure: Option<(Vec<usize>, String)>,
    pub notes: Vec<String>,
}

/// Runs every family on `samples` (in the order of [`chosen`]).
pub(crate) fn analyse(samples: &[Sample]) -> Analysis {
    let found = |involved: Vec<usize>, problem: String| Analysis { exposure: Some((involved, problem)), notes: Vec::new() };
    // Encodings, whole or partial, in each random sample.
    for (index, sample) in samples.iter().enumerate().take(3) {
        if let Some(problem) = encoding(&sample.plaintext, &sample.ciphertext) {
            return found(vec![index], problem);
        }
    }
    // A fixed keystream between random samples.
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        if let Some(problem) = shared_keystream(&samples[a], &samples[b]) {
            return found(vec![a, b], problem);
        }
    }
    let mut notes = vec![format!(
        "no encoding of any {WINDOW}-byte window (raw, reversed, XOR with one byte, hex, base64) and no shared keystream in 3 ciphertexts"
    )];
    // Structure: related plaintexts, repeated blocks, low entropy.
    let (first, second, third, related, repeated, zero) = (&samples[0], &samples[1], &samples[2], &samples[3], &samples[4], &samples[5]);
    if let Some(problem) = related_structure(first, related, second, third) {
        return found(vec![0, 3, 1], problem);
    }
    if let Some(problem) = repeated_block(repeated, first, second) {
        return found(vec![4, 0], problem);
    }
    match low_entropy(zero, first, second, third) {
        Some(Ok(problem)) => return found(vec![5, 2], problem),
        Some(Err(note)) => notes.push(note),
        None => {}
    }
    notes.push("no structure shared by related plaintexts, no repeated block, an all-zero plaintext as varied as a random one".to_owned());
    Analysis { exposure: None, notes }
}

/// Where `needle` occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether the ciphertext holds any `WINDOW` bytes of the plaintext in a known encoding.
fn encoding(plaintext: &[u8], ciphertext: &[u8]) -> Option<String> {
    let len = plaintext.len();
    let whole = |form: &str, at: usize| {
        format!("the ciphertext holds the whole plaintext as {form} at byte {at}: whoever reads etcd decodes the DEK")
    };
    let part = |form: &str, start: usize, at: usize| {
        format!(
            "the ciphertext holds plaintext bytes {start}..{} as {form} at byte {at}: whoever reads etcd reads {WINDOW} bytes of \
             every DEK ({} bits of its 256), and the rest falls to a search",
            start + WINDOW,
            WINDOW * 8
        )
    };
    // Byte forms: raw, reversed, XOR with one fixed byte (raw is 0x00, inverted 0xff). The plugin
    // chose the ciphertext's length: it may be shorter than a window, or empty.
    let reversed: Vec<u8> = plaintext.iter().rev().copied().collect();
    for (source, name) in [(plaintext, "bytes"), (reversed.as_slice(), "reversed bytes")] {
        for (start, window) in source.windows(WINDOW).enumerate() {
            for (at, candidate) in ciphertext.windows(WINDOW).enumerate() {
                let key = candidate[0] ^ window[0];
                if candidate.iter().zip(window).all(|(c, p)| c ^ p == key) {
                    let form = match key {
                        0x00 => format!("raw {name}"),
                        0xff => format!("inverted {name}"),
                        key => format!("{name} XORed with the fixed byte {key:#04x}"),
                    };
                    let whole_fits =
                        start == 0 && ciphertext.get(at..at + len).is_some_and(|c| c.iter().zip(source).all(|(c, p)| c ^ p == key));
                    return Some(if whole_fits {
                        whole(&form, at)
                    } else {
                        part(&form, if name == "bytes" { start } else { len - start - WINDOW }, at)
                    });
                }
            }
        }
    }
    // Text forms: hex of any window, base64 of any 9-byte window (any alignment).
    for (start, window) in plaintext.windows(WINDOW).enumerate() {
        for (form, text) in [("lower-case hex", hex::encode(window)), ("upper-case hex", hex::encode_upper(window))] {
            if let Some(at) = find(ciphertext, text.as_bytes()) {
                let full = if form.starts_with("lower") { hex::encode(plaintext) } else { hex::encode_upper(plaintext) };
                return Some(if find(ciphertext, full.as_bytes()).is_some() { whole(form, at) } else { part(form, start, at) });
            }
        }
    }
    for (start, window) in plaintext.windows(9).enumerate() {
        let engines =
            [("base64", &base64::engine::general_purpose::STANDARD), ("URL-safe base64", &base64::engine::general_purpose::URL_SAFE)];
        for (form, engine) in engines {
            if let Some(at) = find(ciphertext, engine.encode(window).as_bytes()) {
                let full = engine.encode(plaintext);
                let full = full.trim_end_matches('=');
                return Some(if find(ciphertext, full.as_bytes()).is_some() { whole(form, at) } else { part(form, start, at) });
            }
        }
    }
    None
}

/// Whether two ciphertexts XOR, somewhere, to the XOR of their plaintexts.
fn shared_keystream(a: &Sample, b: &Sample) -> Option<String> {
    let (ca, cb) = (&a.ciphertext, &b.ciphertext);
    let windows = a.plaintext.chunks_exact(WINDOW).zip(b.plaintext.chunks_exact(WINDOW));
    for (index, (pa, pb)) in windows.enumerate() {
        let start = index * WINDOW;
        // Ciphertexts shorter than a window (the plugin chose their length) give no window to compare.
        for (at, (wa, wb)) in ca.windows(WINDOW).zip(cb.windows(WINDOW)).enumerate() {
            if (0..WINDOW).all(|i| wa[i] ^ pa[i] == wb[i] ^ pb[i]) {
                return Some(format!(
                    "at byte {at} both ciphertexts are their plaintexts (bytes {start}..{}) XORed with the same key: a fixed XOR key or \
                     a reused keystream (fixed nonce). Whoever reads etcd XORs two ciphertexts to get the XOR of two DEKs, and one \
                     known DEK or key byte gives them all",
                    start + WINDOW
                ));
            }
        }
    }
    None
}

/// Positions where `a` and `b` (equal lengths) agree in runs of at least `WINDOW` bytes (random
/// coincidences do not form such runs; shared framing and plaintext structure do).
fn agreeing_runs(a: &[u8], b: &[u8]) -> HashSet<usize> {
    let mut out = HashSet::new();
    let mut start = 0;
    for i in 0..=a.len() {
        if i < a.len() && a[i] == b[i] {
            continue;
        }
        if i - start >= WINDOW {
            out.extend(start..i);
        }
        start = i + 1;
    }
    out
}

fn related_structure(first: &Sample, related: &Sample, second: &Sample, third: &Sample) -> Option<String> {
    let (f, r) = (&first.ciphertext, &related.ciphertext);
    let shared = if f.len() == r.len() && second.ciphertext.len() == f.len() && third.ciphertext.len() == f.len() {
        // Framing agrees between unrelated ciphertexts too: only what agrees for the related pair counts.
        let framing = |i: &usize| f[*i] == second.ciphertext[*i] || r[*i] == third.ciphertext[*i];
        agreeing_runs(f, r).into_iter().filter(|i| !framing(i)).count()
    } else {
        let prefix = |a: &[u8], b: &[u8]| a.iter().zip(b).take_while(|(x, y)| x == y).count();
        let suffix = |a: &[u8], b: &[u8]| a.iter().rev().zip(b.iter().rev()).take_while(|(x, y)| x == y).count();
        let baseline = prefix(f, &second.ciphertext).max(prefix(r, &third.ciphertext));
        let baseline_suffix = suffix(f, &second.ciphertext).max(suffix(r, &third.ciphertext));
        prefix(f, r).saturating_sub(baseline) + suffix(f, r).saturating_sub(baseline_suffix)
    };
    (shared >= SHARED_POSITIONS).then(|| {
        format!(
            "the ciphertexts of two plaintexts sharing their first 16 bytes agree in a run of {shared} bytes that unrelated              ciphertexts do not share: the ciphertext follows the plaintext's structure (ECB, a fixed IV or nonce, a              per-position table). Whoever reads etcd sees which DEKs share bytes and learns the rest from one known pair"
        )
    })
}

/// Runs of `WINDOW` bytes that occur twice (without overlap) in `data`.
fn repeated_runs(data: &[u8]) -> HashSet<&[u8]> {
    let mut out = HashSet::new();
    for i in 0..data.len().saturating_sub(WINDOW) {
        let run = &data[i..i + WINDOW];
        if data.get(i + WINDOW..).is_some_and(|rest| find(rest, run).is_some()) {
            out.insert(run);
        }
    }
    out
}

fn repeated_block(repeated: &Sample, first: &Sample, second: &Sample) -> Option<String> {
    // Framing (headers, padding) repeats in every ciphertext; only runs the others lack count.
    let own: Vec<&[u8]> = repeated_runs(&repeated.ciphertext)
        .into_iter()
        .filter(|run| find(&first.ciphertext, run).is_none() && find(&second.ciphertext, run).is_none())
        .collect();
    (!own.is_empty()).then(|| {
        "a plaintext made of one 16-byte block twice gives a ciphertext with a repeated run of 8+ bytes that other ciphertexts \
         lack: equal plaintext blocks encrypt to equal ciphertext blocks (ECB-like). Whoever reads etcd sees the DEK's structure"
            .to_owned()
    })
}

/// `Some(Ok(problem))`: low entropy; `Some(Err(note))`: not measurable; `None`: fine.
fn low_entropy(zero: &Sample, first: &Sample, second: &Sample, third: &Sample) -> Option<Result<String, String>> {
    let len = first.ciphertext.len();
    if [&zero.ciphertext, &second.ciphertext, &third.ciphertext].iter().any(|c| c.len() != len) {
        return Some(Err("ciphertext lengths differ between 32-byte plaintexts: the all-zero entropy test was not run".to_owned()));
    }
    // The positions that vary between ciphertexts (framing left out).
    let varying: Vec<usize> = (0..len).filter(|&i| first.ciphertext[i] != second.ciphertext[i]).collect();
    if varying.len() < 16 {
        return Some(Err(format!("only {} ciphertext bytes vary: the all-zero entropy test was not run", varying.len())));
    }
    let distinct = |c: &[u8]| varying.iter().map(|&i| c[i]).collect::<HashSet<u8>>().len();
    let (zero_distinct, random_distinct) = (distinct(&zero.ciphertext), distinct(&third.ciphertext));
    (zero_distinct * 2 < random_distinct).then(|| {
        Ok(format!(
            "the ciphertext of an all-zero plaintext takes {zero_distinct} distinct byte values over its {} varying bytes, a random \
             plaintext's {random_distinct}: the output follows the input's entropy (a fixed transform, not a cipher). Whoever reads \
             etcd recognises weak DEKs and can invert the transform",
            varying.len()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// A stand-in for a real cipher: a 12-byte "key id" header, a random nonce and a keyed
    /// pseudo-random pad per (nonce, plaintext) with a tag. Not a cipher, but its output is
    /// unrelated to the plaintext the way a cipher's is.
    fn sealed(plaintext: &[u8]) -> Vec<u8> {
        let nonce = random(12);
        let mut out = b"key-id-0001:".to_vec();
        out.extend(&nonce);
        for (i, chunk) in plaintext.chunks(32).enumerate() {
            let pad = Sha256::new().chain_update(&nonce).chain_update([i as u8]).finalize();
            out.extend(chunk.iter().zip(pad.iter()).map(|(p, k)| p ^ k));
        }
        out.extend(&Sha256::new().chain_update(&nonce).chain_update(plaintext).finalize()[..16]);
        out
    }

    fn run(transform: impl Fn(&[u8]) -> Vec<u8>) -> Analysis {
        let samples: Vec<Sample> =
            chosen().into_iter().map(|(what, plaintext)| Sample { what, ciphertext: transform(&plaintext), plaintext }).collect();
        analyse(&samples)
    }

    fn problem(transform: impl Fn(&[u8]) -> Vec<u8>) -> String {
        run(transform).exposure.map(|(_, p)| p).unwrap_or_default()
    }

    #[test]
    fn a_cipher_and_encodings_of_its_output_pass() {
        for _ in 0..20 {
            let analysis = run(sealed);
            assert!(analysis.exposure.is_none(), "{analysis:?}");
            let analysis = run(|p| hex::encode(sealed(p)).into_bytes());
            assert!(analysis.exposure.is_none(), "hex of a ciphertext exposes nothing: {analysis:?}");
            let analysis = run(|p| base64::engine::general_purpose::STANDARD.encode(sealed(p)).into_bytes());
            assert!(analysis.exposure.is_none(), "base64 of a ciphertext exposes nothing: {analysis:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Issue 28: the plugin chooses every ciphertext's length (0 B crashed the suite): the
        /// analysis gives a verdict for any ciphertexts, never a panic.
        #[test]
        fn any_ciphertexts_get_a_verdict(ciphertexts in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..48), 6)) {
            let samples: Vec<Sample> = chosen()
                .into_iter()
                .zip(ciphertexts)
                .map(|((what, plaintext), ciphertext)| Sample { what, plaintext, ciphertext })
                .collect();
            let analysis = analyse(&samples);
            proptest::prop_assert!(analysis.exposure.is_some() || !analysis.notes.is_empty());
        }
    }

    #[test]
    fn short_and_empty_ciphertexts_are_analysed() {
        for len in 0..=WINDOW + 1 {
            let analysis = run(|_| vec![0x42; len]);
            assert!(analysis.exposure.is_some() || !analysis.notes.is_empty(), "{len} B: {analysis:?}");
        }
        // A ciphertext that is the plaintext's first bytes only, shorter than the plaintext.
        assert!(problem(|p| p[..WINDOW].to_vec()).contains("plaintext bytes 0..8 as raw bytes"), "{}", problem(|p| p[..WINDOW].to_vec()));
    }

    #[test]
    fn each_family_is_diagnosed() {
        let b64 = |p: &[u8]| [b"v1:".to_vec(), base64::engine::general_purpose::STANDARD.encode(p).into_bytes()].concat();
        assert!(problem(b64).contains("the whole plaintext as base64"), "{}", problem(b64));
        let url = |p: &[u8]| [b"x".to_vec(), base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&p[5..]).into_bytes()].concat();
        assert!(problem(url).contains("base64 at byte 1"), "{}", problem(url));
        let partial = |p: &[u8]| [sealed(p), hex::encode(&p[..8]).into_bytes()].concat();
        assert!(problem(partial).contains("plaintext bytes 0..8 as lower-case hex"), "{}", problem(partial));
        let reversed = |p: &[u8]| [sealed(p), p.iter().rev().copied().collect()].concat();
        assert!(problem(reversed).contains("the whole plaintext as raw reversed bytes"), "{}", problem(reversed));
        let inverted = |p: &[u8]| p.iter().map(|b| !b).collect();
        assert!(problem(inverted).contains("inverted bytes"), "{}", problem(inverted));
        let xor_byte = |p: &[u8]| [b"hdr".to_vec(), p.iter().map(|b| b ^ 0x5a).collect()].concat();
        assert!(problem(xor_byte).contains("XORed with the fixed byte 0x5a"), "{}", problem(xor_byte));
        let key: Vec<u8> = random(32);
        let xor_key = |p: &[u8]| [b"hdr".to_vec(), p.iter().zip(&key).map(|(a, b)| a ^ b).collect()].concat();
        assert!(problem(xor_key).contains("the same key"), "{}", problem(xor_key));
        let table = |p: &[u8]| [sealed(p), p.iter().map(|b| b.wrapping_mul(167).wrapping_add(13)).collect()].concat();
        assert!(problem(table).contains("follows the plaintext's structure"), "{}", problem(table));
        // An ECB-like block transform: each 16-byte block through a keyed hash (not invertible, but
        // the structure is what an attacker sees).
        let ecb = |p: &[u8]| {
            let mut out = b"hdr".to_vec();
            for block in p.chunks(16) {
                out.extend(&Sha256::new().chain_update(b"k").chain_update(block).finalize()[..16]);
            }
            out
        };
        let ecb_problem = problem(ecb);
        assert!(ecb_problem.contains("structure") || ecb_problem.contains("ECB-like"), "{ecb_problem}");
    }
}
