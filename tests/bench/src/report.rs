//! The table: each scenario, its baseline from the same run, the ratio and the target.

use std::fmt::Write;

use crate::load::Measured;

pub struct Row {
    id: &'static str,
    name: &'static str,
    measured: Measured,
    cpu: Vec<(&'static str, f64)>,
    baseline: &'static str,
    baseline_rps: f64,
    target: f64,
}

impl Row {
    pub fn new(
        id: &'static str,
        name: &'static str,
        (measured, cpu): (Measured, Vec<(&'static str, f64)>),
        baseline: &'static str,
        baseline_rps: f64,
        target: f64,
    ) -> Self {
        Row { id, name, measured, cpu, baseline, baseline_rps, target }
    }

    fn ratio(&self) -> f64 {
        if self.baseline_rps > 0.0 { self.measured.rps / self.baseline_rps } else { 0.0 }
    }
}

/// CPU of each process, in cores.
pub type Cpu = Vec<(&'static str, f64)>;

struct Flood {
    id: &'static str,
    name: &'static str,
    measured: Measured,
    cpu: Cpu,
    target_ms: f64,
}

struct Memory {
    sessions: usize,
    /// (identity, facade) MiB.
    idle: (f64, f64),
    busy: (f64, f64),
    target_mib: f64,
}

pub struct Report {
    cores: usize,
    pub load_at_start: String,
    load_at_end: String,
    cpu_model: String,
    argon2_ms: f64,
    baselines: Vec<(&'static str, Measured, Cpu)>,
    rows: Vec<Row>,
    flood: Option<Flood>,
    memory: Option<Memory>,
    lag: Option<crate::replicas::Lag>,
    notes: Vec<String>,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn cpu_text(cpu: &[(&'static str, f64)]) -> String {
    cpu.iter().map(|(name, cores)| format!("{name} {:.0}%", cores * 100.0)).collect::<Vec<_>>().join(", ")
}

impl Report {
    pub fn new(cores: usize) -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines().find_map(|line| {
                    line.strip_prefix("model name").map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
                })
            })
            .unwrap_or_default();
        Report {
            cores,
            load_at_start: loadavg(),
            load_at_end: String::new(),
            cpu_model,
            argon2_ms: 0.0,
            baselines: Vec::new(),
            rows: Vec::new(),
            flood: None,
            memory: None,
            lag: None,
            notes: Vec::new(),
        }
    }

    pub fn baseline(&mut self, name: &'static str, measured: Measured, cpu: Vec<(&'static str, f64)>) {
        println!(
            "baseline {name}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
            measured.rps, measured.p50_ms, measured.p99_ms
        );
        self.baselines.push((name, measured, cpu));
    }

    pub fn row(&mut self, row: Row) {
        println!(
            "{} {}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {:.2}x {} ({}), errors {}",
            row.id,
            row.name,
            row.measured.rps,
            row.measured.p50_ms,
            row.measured.p99_ms,
            row.ratio(),
            row.baseline,
            cpu_text(&row.cpu),
            row.measured.errors
        );
        self.rows.push(row);
    }

    pub fn flood_row(
        &mut self,
        id: &'static str,
        name: &'static str,
        measured: Measured,
        cpu: Vec<(&'static str, f64)>,
        target_ms: f64,
    ) {
        println!("{id} {name}: p99 {:.2} ms ({:.0} req/s)", measured.p99_ms, measured.rps);
        self.flood = Some(Flood { id, name, measured, cpu, target_ms });
    }

    pub fn memory(&mut self, sessions: usize, idle: (f64, f64), busy: (f64, f64), target_mib: f64) {
        println!(
            "8 RSS identity/facade: idle {:.1}/{:.1} MiB, {sessions} sessions {:.1}/{:.1} MiB",
            idle.0, idle.1, busy.0, busy.1
        );
        self.memory = Some(Memory { sessions, idle, busy, target_mib });
    }

    pub fn lag(&mut self, lag: crate::replicas::Lag) {
        println!(
            "9 revocation across {} replicas: refusal p50 {:.1} ms p99 {:.1} ms (poll {:.2} ms); socket close p50 {:.1} ms p99 {:.1} ms",
            lag.replicas, lag.refusal.p50, lag.refusal.p99, lag.poll_ms, lag.socket.p50, lag.socket.p99
        );
        self.lag = Some(lag);
    }

    pub fn note(&mut self, note: String) {
        println!("{note}");
        self.notes.push(note);
    }

    pub fn finish(&mut self, argon2_seconds: f64) {
        self.argon2_ms = argon2_seconds * 1000.0;
        self.load_at_end = loadavg();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "## Latest run\n");
        let _ = writeln!(
            out,
            "Machine: {} cores ({}); load average {} at the start, {} at the end. One argon2id \
             verify (m=19456 KiB, t=2, p=1) took {:.1} ms here, so the argon2 bound is {:.1} logins/s. \
             Load: wrk on 2 threads (HTTP), a tonic client (gRPC), on the same cores as the servers.\n",
            self.cores,
            self.cpu_model,
            self.load_at_start,
            self.load_at_end,
            self.argon2_ms,
            self.cores as f64 / (self.argon2_ms / 1000.0)
        );
        let _ = writeln!(out, "Baselines, measured in the same run:\n");
        let _ = writeln!(out, "| baseline | req/s | p50 ms | p99 ms | CPU |");
        let _ = writeln!(out, "|---|---:|---:|---:|---|");
        for (name, measured, cpu) in &self.baselines {
            let _ = writeln!(
                out,
                "| {name} | {:.0} | {:.2} | {:.2} | {} |",
                measured.rps,
                measured.p50_ms,
                measured.p99_ms,
                cpu_text(cpu)
            );
        }
        let _ = writeln!(out, "\n| # | scenario | req/s | p50 ms | p99 ms | CPU | ratio | target | met |");
        let _ = writeln!(out, "|---|---|---:|---:|---:|---|---:|---:|---|");
        for row in &self.rows {
            let ratio = row.ratio();
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {:.2}× {} | ≥ {:.1}× | {} |",
                row.id,
                row.name,
                row.measured.rps,
                row.measured.p50_ms,
                row.measured.p99_ms,
                cpu_text(&row.cpu),
                ratio,
                row.baseline,
                row.target,
                if ratio >= row.target && row.measured.errors == 0 { "yes" } else { "**no**" }
            );
        }
        if let Some(Flood { id, name, measured, cpu, target_ms: target }) = &self.flood {
            let _ = writeln!(
                out,
                "| {id} | {name} | {:.0} | {:.2} | {:.2} | {} | p99 {:.2} ms | < {target:.0} ms | {} |",
                measured.rps,
                measured.p50_ms,
                measured.p99_ms,
                cpu_text(cpu),
                measured.p99_ms,
                if measured.p99_ms < *target && measured.errors == 0 { "yes" } else { "**no**" }
            );
        }
        if let Some(Memory { sessions, idle, busy, target_mib: target }) = &self.memory {
            let met = busy.0 < *target && busy.1 < *target;
            let _ = writeln!(
                out,
                "| 8 | RSS idle → after {sessions} live sessions | | | | | identity {:.1} → {:.1} MiB, facade {:.1} → {:.1} MiB | < {target:.0} MiB each | {} |",
                idle.0,
                busy.0,
                idle.1,
                busy.1,
                if met { "yes" } else { "**no**" }
            );
        }
        if let Some(lag) = &self.lag {
            let _ = writeln!(
                out,
                "\nScenario 9, revocation visibility across {} identity replicas on one PostgreSQL database: \
                 `Logout` on replica A, {} times; replicas B and C polled with `Authenticate` (one poll every \
                 {:.2} ms on average) and a websocket on each of two facades (one on B, one on C). Time from \
                 the call returning to the first refusal, and to each socket's close frame (4401):\n",
                lag.replicas, lag.trials, lag.poll_ms
            );
            let _ = writeln!(out, "| # | what | samples | p50 ms | p99 ms | max ms | target | met |");
            let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---|");
            for (id, what, figures, target) in [
                ("9.1", "refused by every other replica", &lag.refusal, 100.0),
                ("9.2", "socket closed on every other facade", &lag.socket, 250.0),
            ] {
                let _ = writeln!(
                    out,
                    "| {id} | {what} | {} | {:.1} | {:.1} | {:.1} | p99 ≤ {target:.0} ms | {} |",
                    figures.samples,
                    figures.p50,
                    figures.p99,
                    figures.max,
                    if figures.p99 <= target { "yes" } else { "**no**" }
                );
            }
        }
        let errors: u64 = self.rows.iter().map(|row| row.measured.errors).sum();
        let _ = writeln!(out, "\nErrors (non-2xx, socket errors, failed calls) across all rows: {errors}.");
        for note in &self.notes {
            let _ = writeln!(out, "\n{note}");
        }
        out
    }
}
