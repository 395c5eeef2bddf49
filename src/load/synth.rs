//! `bulkfhir synth`: a population of any size shaped like a sample (the Synthea sample), for
//! benchmarks. The sample is held in memory once (tens of MB) and written out again and again,
//! each copy with fresh ids: every id of the sample, wherever it occurs (the resource's own id,
//! references, `urn:uuid:` identifiers), gets the copy's number as its first 8 characters, so
//! references stay consistent inside a copy and no copy shares an id with another or with the
//! sample. Copies are streamed to `copy-NNNNNN.ndjson` files; 1.3 GB never sits in memory.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, BufWriter, Write},
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::{collect_files, open, LoadError};

/// The characters of an id that the copy number replaces.
const PREFIX: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error(transparent)]
    Read(#[from] LoadError),
    #[error("cannot write '{path}': {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{file}: line {line}: {reason}")]
    Sample { file: PathBuf, line: u64, reason: String },
    #[error("the sample has no resources")]
    EmptySample,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthReport {
    pub copies: u64,
    pub resources: u64,
    pub bytes: u64,
    pub files: Vec<PathBuf>,
}

/// One sample line and where the sample's ids occur in it (byte offsets of their first char).
struct Line {
    text: Vec<u8>,
    ids_at: Vec<usize>,
}

/// Writes whole copies of the sample until at least `resources` are written (the last copy is
/// not cut short, so every reference resolves), into `out` (created if needed).
pub fn synthesize(sample: &[PathBuf], resources: u64, out: &Path) -> Result<SynthReport, SynthError> {
    let lines = read_sample(sample)?;
    if lines.is_empty() {
        return Err(SynthError::EmptySample);
    }
    let copies = resources.div_ceil(lines.len() as u64).max(1);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SynthError::Write { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut report = SynthReport { copies, resources: 0, bytes: 0, files: Vec::new() };
    let mut text = Vec::new();
    for copy in 1..=copies {
        let path = out.join(format!("copy-{copy:06}.ndjson"));
        let mut file = BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).map_err(io(&path))?);
        let prefix = format!("{copy:0PREFIX$x}");
        for line in &lines {
            text.clear();
            text.extend_from_slice(&line.text);
            for &at in &line.ids_at {
                text[at..at + PREFIX].copy_from_slice(prefix.as_bytes());
            }
            text.push(b'\n');
            file.write_all(&text).map_err(io(&path))?;
            report.bytes += text.len() as u64;
        }
        file.flush().map_err(io(&path))?;
        report.resources += lines.len() as u64;
        report.files.push(path);
    }
    Ok(report)
}

/// Reads the sample's NDJSON lines and finds its ids in them. The ids must be UUID-shaped and
/// distinct after their first 8 characters (Synthea's are), so that a copy's ids are fresh.
fn read_sample(sample: &[PathBuf]) -> Result<Vec<Line>, SynthError> {
    let mut texts: Vec<(PathBuf, u64, Vec<u8>)> = Vec::new();
    for path in collect_files(sample)? {
        let reader = BufReader::with_capacity(1 << 20, open(&path)?);
        for (n, line) in reader.split(b'\n').enumerate() {
            let line = line.map_err(|source| LoadError::Io { path: path.clone(), source })?;
            if !line.iter().all(u8::is_ascii_whitespace) {
                texts.push((path.clone(), n as u64 + 1, line));
            }
        }
    }
    // Each id by its part after the prefix, which must not repeat.
    let mut ids: HashMap<Vec<u8>, Vec<u8>> = HashMap::with_capacity(texts.len());
    for (file, line, text) in &texts {
        let fail = |reason: String| SynthError::Sample { file: file.clone(), line: *line, reason };
        let value: Value = serde_json::from_slice(text).map_err(|e| fail(format!("not JSON: {e}")))?;
        let id = value.get("id").and_then(Value::as_str).unwrap_or_default().as_bytes();
        if !is_uuid(id) {
            return Err(fail(format!("the id '{}' is not a UUID; synth renumbers UUID ids only", String::from_utf8_lossy(id))));
        }
        if let Some(other) = ids.insert(id[PREFIX..].to_vec(), id.to_vec())
            && other != id
        {
            return Err(fail("two ids differ only in their first 8 characters; copies would collide".into()));
        }
    }
    Ok(texts
        .into_iter()
        .map(|(_, _, text)| {
            let ids_at = uuids_in(&text).filter(|&at| ids.get(&text[at + PREFIX..at + 36]).is_some_and(|id| id[..] == text[at..at + 36])).collect();
            Line { text, ids_at }
        })
        .collect())
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in hex digits.
fn is_uuid(s: &[u8]) -> bool {
    s.len() == 36
        && s.iter().enumerate().all(|(i, b)| if matches!(i, 8 | 13 | 18 | 23) { *b == b'-' } else { b.is_ascii_hexdigit() })
}

/// Offsets of UUID-shaped runs in a text, not inside longer runs of id characters.
fn uuids_in(text: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let id_char = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.';
    (0..text.len().saturating_sub(35)).filter(move |&at| {
        is_uuid(&text[at..at + 36])
            && (at == 0 || !id_char(text[at - 1]))
            && text.get(at + 36).is_none_or(|&b| !id_char(b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "6c5d9ca9-54d7-42f5-bfae-a7c19cd217f2";
    const O: &str = "cdec68f5-5a6a-4861-b26b-f4061ff4f2f9";
    const ELSEWHERE: &str = "11111111-2222-3333-4444-555555555555";

    fn sample(dir: &Path) -> PathBuf {
        let path = dir.join("sample.ndjson");
        let lines = [
            format!(r#"{{"resourceType":"Patient","id":"{P}","identifier":[{{"value":"urn:uuid:{P}"}}]}}"#),
            format!(r#"{{"resourceType":"Observation","id":"{O}","subject":{{"reference":"Patient/{P}"}},"performer":[{{"reference":"Practitioner/{ELSEWHERE}"}}]}}"#),
        ];
        std::fs::write(&path, lines.join("\n")).unwrap();
        path
    }

    #[test]
    fn copies_get_fresh_ids_with_consistent_references() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let report = synthesize(&[sample(dir.path())], 5, &out).unwrap();
        assert_eq!((report.copies, report.resources), (3, 6), "whole copies, at least the number asked for");
        let third = std::fs::read_to_string(&report.files[2]).unwrap();
        let p3 = format!("00000003{}", &P[8..]);
        let o3 = format!("00000003{}", &O[8..]);
        assert_eq!(third.lines().count(), 2);
        assert!(third.contains(&format!(r#""id":"{p3}","identifier":[{{"value":"urn:uuid:{p3}"}}]"#)), "{third}");
        assert!(third.contains(&format!(r#""id":"{o3}","subject":{{"reference":"Patient/{p3}"}}"#)), "{third}");
        assert!(third.contains(ELSEWHERE), "an id outside the sample is left as it is: {third}");
        assert!(!third.contains(P) && !third.contains(O));
        let total: u64 = report.files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
        assert_eq!(report.bytes, total);
    }

    #[test]
    fn refuses_ids_it_cannot_renumber() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.ndjson");
        std::fs::write(&path, r#"{"resourceType":"Patient","id":"p1"}"#).unwrap();
        let error = synthesize(&[path], 1, &dir.path().join("out")).unwrap_err();
        assert!(error.to_string().contains("line 1: the id 'p1' is not a UUID"), "{error}");
    }
}
