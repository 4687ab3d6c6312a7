//! The table: each scenario, its baseline from the same run, the ratio and the target.

use std::fmt::Write;

use crate::load::Measured;

/// CPU of each process, in cores.
pub type Cpu = Vec<(&'static str, f64)>;

/// One run of a scenario: the load's figures and the CPU of the processes serving it.
pub type Sample = (Measured, Cpu);

/// CPU time per request served, in µs: every serving process's CPU over the requests. Steadier
/// than throughput on a shared machine: a neighbour that steals a core lowers the requests
/// per second, not (much) the CPU each request costs.
fn cpu_us((measured, cpu): &Sample) -> f64 {
    let cores: f64 = cpu.iter().map(|(_, cores)| cores).sum();
    if measured.rps > 0.0 { cores / measured.rps * 1e6 } else { 0.0 }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The runs of one scenario: medians and spreads.
pub struct Runs(Vec<Sample>);

impl Runs {
    pub fn new() -> Self {
        Runs(Vec::new())
    }

    pub fn one(sample: Sample) -> Self {
        Runs(vec![sample])
    }

    pub fn push(&mut self, sample: Sample) {
        self.0.push(sample);
    }

    fn of(&self, figure: impl Fn(&Sample) -> f64) -> f64 {
        median(self.0.iter().map(figure).collect())
    }

    pub fn rps(&self) -> f64 {
        self.of(|(measured, _)| measured.rps)
    }

    pub fn cpu_us(&self) -> f64 {
        self.of(cpu_us)
    }

    fn p50_ms(&self) -> f64 {
        self.of(|(measured, _)| measured.p50_ms)
    }

    fn p99_ms(&self) -> f64 {
        self.of(|(measured, _)| measured.p99_ms)
    }

    fn errors(&self) -> u64 {
        self.0.iter().map(|(measured, _)| measured.errors).sum()
    }

    /// `median (min–max)` of a figure, or the figure alone for one run.
    fn spread(&self, figure: impl Fn(&Sample) -> f64, decimals: usize) -> String {
        let values: Vec<f64> = self.0.iter().map(figure).collect();
        let (low, high) = values.iter().fold((f64::MAX, f64::MIN), |(low, high), v| (low.min(*v), high.max(*v)));
        let middle = median(values.clone());
        if values.len() < 2 {
            format!("{middle:.decimals$}")
        } else {
            format!("{middle:.decimals$} ({low:.decimals$}–{high:.decimals$})")
        }
    }

    /// Each process's CPU, the median of the runs.
    fn cpu(&self) -> Cpu {
        let Some((_, first)) = self.0.first() else { return Vec::new() };
        first
            .iter()
            .enumerate()
            .map(|(index, (name, _))| (*name, median(self.0.iter().map(|(_, cpu)| cpu[index].1).collect())))
            .collect()
    }
}

/// What a row is read against.
#[derive(Debug, Clone, Copy)]
pub struct Against {
    pub name: &'static str,
    pub rps: f64,
    /// CPU per request, µs, when the baseline is a server measured here.
    pub cpu_us: Option<f64>,
}

/// A row's target: a throughput ratio to reach, or a CPU-per-request ratio not to exceed.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    Throughput(f64),
    CpuPerRequest(f64),
}

pub struct Row {
    id: &'static str,
    name: &'static str,
    runs: Runs,
    against: Against,
    target: Target,
}

impl Row {
    pub fn new(id: &'static str, name: &'static str, runs: Runs, against: Against, target: Target) -> Self {
        Row { id, name, runs, against, target }
    }

    fn ratio(&self) -> f64 {
        if self.against.rps > 0.0 { self.runs.rps() / self.against.rps } else { 0.0 }
    }

    /// CPU per request over the baseline's, when it has one.
    fn cpu_ratio(&self) -> Option<f64> {
        self.against.cpu_us.filter(|us| *us > 0.0).map(|us| self.runs.cpu_us() / us)
    }

    fn met(&self) -> bool {
        self.runs.errors() == 0
            && match self.target {
                Target::Throughput(target) => self.ratio() >= target,
                Target::CpuPerRequest(target) => self.cpu_ratio().is_some_and(|ratio| ratio <= target),
            }
    }
}

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
    baselines: Vec<(&'static str, Runs)>,
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

    /// Records a baseline server's runs; returns what rows read against it (`short` names it).
    pub fn baseline(&mut self, name: &'static str, short: &'static str, runs: Runs) -> Against {
        println!(
            "baseline {name}: {} req/s, {} µs CPU/request",
            runs.spread(|(measured, _)| measured.rps, 0),
            runs.spread(cpu_us, 1)
        );
        let against = Against { name: short, rps: runs.rps(), cpu_us: Some(runs.cpu_us()) };
        self.baselines.push((name, runs));
        against
    }

    pub fn row(&mut self, row: Row) {
        println!(
            "{} {}: {} req/s, {} µs CPU/request, p99 {:.2} ms, {:.2}x {} ({}), errors {}",
            row.id,
            row.name,
            row.runs.spread(|(measured, _)| measured.rps, 0),
            row.runs.spread(cpu_us, 1),
            row.runs.p99_ms(),
            row.ratio(),
            row.against.name,
            cpu_text(&row.runs.cpu()),
            row.runs.errors()
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
        let _ = writeln!(
            out,
            "Baselines, measured in the same run, interleaved with the rows read against them. Where \
             a figure reads `median (min–max)`, the scenario ran that many times; CPU/request is the \
             CPU time (user + system, from /proc) of every serving process over the requests served:\n"
        );
        let _ = writeln!(out, "| baseline | req/s | CPU µs/request | p50 ms | p99 ms | CPU |");
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---|");
        for (name, runs) in &self.baselines {
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {:.2} | {:.2} | {} |",
                runs.spread(|(measured, _)| measured.rps, 0),
                runs.spread(cpu_us, 1),
                runs.p50_ms(),
                runs.p99_ms(),
                cpu_text(&runs.cpu())
            );
        }
        let _ = writeln!(
            out,
            "\n| # | scenario | req/s | CPU µs/request | p50 ms | p99 ms | CPU | throughput ratio | CPU/request ratio | target | met |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---|");
        for row in &self.rows {
            let cpu_ratio = row.cpu_ratio().map_or_else(|| "—".to_owned(), |ratio| format!("{ratio:.2}×"));
            let target = match row.target {
                Target::Throughput(target) => format!("throughput ≥ {target:.1}×"),
                Target::CpuPerRequest(target) => format!("CPU/request ≤ {target:.1}×"),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.2} | {:.2} | {} | {:.2}× {} | {cpu_ratio} | {target} | {} |",
                row.id,
                row.name,
                row.runs.spread(|(measured, _)| measured.rps, 0),
                row.runs.spread(cpu_us, 1),
                row.runs.p50_ms(),
                row.runs.p99_ms(),
                cpu_text(&row.runs.cpu()),
                row.ratio(),
                row.against.name,
                if row.met() { "yes" } else { "**no**" }
            );
        }
        if let Some(Flood { id, name, measured, cpu, target_ms: target }) = &self.flood {
            let _ = writeln!(
                out,
                "| {id} | {name} | {:.0} | {:.1} | {:.2} | {:.2} | {} | | | p99 < {target:.0} ms | {} |",
                measured.rps,
                cpu_us(&(*measured, cpu.clone())),
                measured.p50_ms,
                measured.p99_ms,
                cpu_text(cpu),
                if measured.p99_ms < *target && measured.errors == 0 { "yes" } else { "**no**" }
            );
        }
        if let Some(Memory { sessions, idle, busy, target_mib: target }) = &self.memory {
            let met = busy.0 < *target && busy.1 < *target;
            let _ = writeln!(
                out,
                "| 8 | RSS idle → after {sessions} live sessions | | | | | | | identity {:.1} → {:.1} MiB, facade {:.1} → {:.1} MiB | < {target:.0} MiB each | {} |",
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
        let errors: u64 = self.rows.iter().map(|row| row.runs.errors()).sum();
        let _ = writeln!(out, "\nErrors (non-2xx, socket errors, failed calls) across all rows: {errors}.");
        for note in &self.notes {
            let _ = writeln!(out, "\n{note}");
        }
        out
    }
}
