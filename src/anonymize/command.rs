//! `bulkfhir anonymize --config FILE IN... --out DIR`: the engine over files, as the reference
//! engine's command-line tool. NDJSON (`.ndjson`) streams in batches spread over the cores,
//! written in input order; any other file is one resource (a Bundle, typically). Each output is
//! `DIR/<input file name>`; a directory given as input stands for its files.

use std::{
    fs::File,
    io::{BufRead, BufReader, BufWriter, Write},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};

use super::{Engine, Scope};

/// Lines handed to the workers at a time: enough to keep them busy, few enough to bound memory.
const BATCH_LINES: usize = 4096;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub files: usize,
    pub resources: u64,
}

/// Runs the configuration at `config` over `inputs`, writing into `out`.
pub fn run(config: &Path, inputs: &[PathBuf], out: &Path) -> anyhow::Result<Report> {
    let bytes = std::fs::read(config).with_context(|| format!("reading the configuration {}", config.display()))?;
    let engine = Engine::from_json(&bytes).with_context(|| format!("the configuration {}", config.display()))?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(input)
                .with_context(|| format!("reading {}", input.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "ndjson" || e == "json"))
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(input.clone());
        }
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut report = Report::default();
    for file in &files {
        let name = file.file_name().with_context(|| format!("{} names no file", file.display()))?;
        let target = out.join(name);
        if std::fs::canonicalize(&target).ok() == std::fs::canonicalize(file).ok() {
            bail!("{} would be written over itself: choose another --out", file.display());
        }
        let scope = Scope {
            file: name.to_string_lossy().into_owned(),
            folder: file.parent().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        let count = if file.extension().is_some_and(|e| e == "ndjson") {
            ndjson(&engine, file, &target, &scope, workers)?
        } else {
            whole(&engine, file, &target, &scope)?
        };
        report.files += 1;
        report.resources += count;
    }
    Ok(report)
}

fn anonymize_line(engine: &Engine, line: &str, scope: &Scope) -> Result<String, String> {
    let mut out = Vec::with_capacity(line.len());
    engine.apply_line(line.as_bytes(), scope, &mut out).map_err(|e| e.to_string())?;
    // The engine writes JSON text: UTF-8.
    String::from_utf8(out).map_err(|e| e.to_string())
}

fn ndjson(engine: &Engine, input: &Path, output: &Path, scope: &Scope, workers: usize) -> anyhow::Result<u64> {
    let reader = BufReader::new(File::open(input).with_context(|| format!("opening {}", input.display()))?);
    let mut writer = BufWriter::new(File::create(output).with_context(|| format!("creating {}", output.display()))?);
    let mut lines = reader.lines();
    let mut line_number = 0usize;
    let mut count = 0u64;
    loop {
        let mut batch = Vec::with_capacity(BATCH_LINES);
        for line in lines.by_ref().take(BATCH_LINES) {
            batch.push(line.with_context(|| format!("reading {}", input.display()))?);
        }
        if batch.is_empty() {
            break;
        }
        let chunk = batch.len().div_ceil(workers);
        let results: Vec<Vec<Result<String, String>>> = std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .chunks(chunk)
                .map(|lines| {
                    s.spawn(move || {
                        lines.iter().filter(|l| !l.trim().is_empty()).map(|l| anonymize_line(engine, l, scope)).collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| vec![Err("the worker failed".into())])).collect()
        });
        for (i, result) in results.into_iter().flatten().enumerate() {
            match result {
                Ok(text) => {
                    writer.write_all(text.as_bytes())?;
                    writer.write_all(b"\n")?;
                    count += 1;
                }
                // Blank lines are skipped, so the number is approximate only where there are some.
                Err(problem) => bail!("{} resource {}: {problem}", input.display(), line_number + i + 1),
            }
        }
        line_number += batch.len();
    }
    writer.flush()?;
    Ok(count)
}

fn whole(engine: &Engine, input: &Path, output: &Path, scope: &Scope) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(input).with_context(|| format!("reading {}", input.display()))?;
    let result = anonymize_line(engine, &text, scope).map_err(|problem| anyhow::anyhow!("{}: {problem}", input.display()))?;
    std::fs::write(output, result + "\n").with_context(|| format!("writing {}", output.display()))?;
    Ok(1)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn writes_each_input_under_its_name_in_order() {
        let dir = std::env::temp_dir().join(format!("anonymize-command-{}", uuid::Uuid::new_v4()));
        let (inp, out) = (dir.join("in"), dir.join("out"));
        std::fs::create_dir_all(&inp).unwrap();
        let config = dir.join("config.json");
        std::fs::write(&config, r#"{"fhirPathRules": [{"path": "Patient.name", "method": "redact"}, {"path": "Resource.id", "method": "keep"}]}"#).unwrap();
        let lines: Vec<String> = (0..10_000).map(|i| format!(r#"{{"resourceType":"Patient","id":"p{i}","name":[{{"family":"F"}}]}}"#)).collect();
        std::fs::write(inp.join("Patient.ndjson"), lines.join("\n") + "\n\n").unwrap();
        std::fs::write(inp.join("bundle.json"), r#"{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient","id":"b","name":[{"family":"F"}]}}]}"#).unwrap();
        let report = run(&config, std::slice::from_ref(&inp), &out).unwrap();
        assert_eq!(report, Report { files: 2, resources: 10_001 });
        let written = std::fs::read_to_string(out.join("Patient.ndjson")).unwrap();
        let ids: Vec<String> = written.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(ids, (0..10_000).map(|i| format!("p{i}")).collect::<Vec<_>>());
        assert!(!written.contains("family"));
        let bundle: Value = serde_json::from_str(&std::fs::read_to_string(out.join("bundle.json")).unwrap()).unwrap();
        assert!(bundle["entry"][0]["resource"].get("name").is_none());
        assert_eq!(bundle["entry"][0]["resource"]["id"], "b");

        std::fs::write(inp.join("Patient.ndjson"), "{\"resourceType\":\"Patient\"}\nnot json\n").unwrap();
        let error = run(&config, &[inp.join("Patient.ndjson")], &out).unwrap_err().to_string();
        assert!(error.contains("resource 2: not JSON"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
