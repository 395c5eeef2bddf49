//! A typo in the configuration stops start-up, naming the key and the nearest real one.

use std::process::Command;

fn bulkfhir() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bulkfhir"));
    // Only the variables a test sets: the environment of the test run stays out.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("BULKFHIR_") {
            command.env_remove(name);
        }
    }
    command
}

#[test]
fn an_unknown_key_in_the_config_file_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bulkfhir.toml");
    std::fs::write(&file, "max_file_byte = 1\n").unwrap();
    let database = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let output = bulkfhir().args(["migrate", "--database-url", &database, "--config"]).arg(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("unknown configuration key 'max_file_byte'") && stderr.contains("did you mean 'max_file_bytes'?"), "{stderr}");
    assert_eq!(stderr.matches("max_file_byte'").count(), 1, "the error is printed once: {stderr}");
    assert!(!dir.path().join("db.sqlite").exists(), "nothing ran");

    std::fs::write(&file, "max_file_bytes = 1000\n[auth]\nallow_open = false\n").unwrap();
    let output = bulkfhir().args(["migrate", "--database-url", &database, "--config"]).arg(&file).output().unwrap();
    assert!(output.status.success(), "known keys pass: {}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn an_unknown_bulkfhir_variable_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let output = bulkfhir().args(["migrate", "--database-url", &database]).env("BULKFHIR_MAX_FILE_BYTE", "1").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("unknown environment variable BULKFHIR_MAX_FILE_BYTE; did you mean BULKFHIR_MAX_FILE_BYTES?"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line for one error: {stderr}");

    let output = bulkfhir().args(["migrate", "--database-url", &database]).env("BULKFHIR_MAX_FILE_BYTES", "1000").output().unwrap();
    assert!(output.status.success(), "a known variable passes: {}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn an_old_setting_name_still_starts_the_server_and_warns_naming_the_new_one() {
    use std::io::{BufRead, BufReader};

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bulkfhir.toml");
    std::fs::write(&file, "retention = 60\n").unwrap();
    let database = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let mut server = bulkfhir()
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &database, "--config"])
        .arg(&file)
        .arg("--output-dir")
        .arg(dir.path().join("exports"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The log until the server says it is serving (or stops).
    let mut log = Vec::new();
    for line in BufReader::new(server.stderr.take().unwrap()).lines().map_while(Result::ok) {
        let serving = line.contains("bulkfhir serving");
        log.push(line);
        if serving {
            break;
        }
    }
    server.kill().unwrap();
    server.wait().unwrap();
    let log = log.join("\n");
    assert!(log.contains("bulkfhir serving"), "the server starts: {log}");
    assert!(
        log.contains("WARN") && log.contains("'retention' in") && log.contains("is deprecated: it is now 'retention_seconds'"),
        "the log names the old key and the new one: {log}"
    );
}
