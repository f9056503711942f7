//! A small bench harness: named cases, a filter from the command line,
//! warm-up and repeated samples, the median and spread of each case, and its
//! ratio to a baseline measured in the same run.
//!
//! ```text
//! cargo bench                          # every case
//! cargo bench -- sync/drain/10         # one case (and its baseline)
//! cargo bench -- drain                 # every case with that path segment
//! cargo bench -- --quick               # fewer samples (the default when CI is set)
//! cargo bench -- --json results.jsonl  # also one JSON object per case
//! ```
#![allow(dead_code, unreachable_pub, missing_debug_implementations)]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

/// Counts every allocation of the process, on every thread, so that a
/// figure such as "allocations per request" includes the server's threads.
#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Allocations made while `f` runs, on all threads.
pub fn allocations<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let region = Region::new(GLOBAL);
    let result = f();
    (result, region.change().allocations)
}

/// Bytes allocated and not freed while `f` runs, on all threads.
pub fn net_bytes<R>(f: impl FnOnce() -> R) -> (R, isize) {
    let region = Region::new(GLOBAL);
    let result = f();
    let change = region.change();
    (
        result,
        change.bytes_allocated as isize - change.bytes_deallocated as isize,
    )
}

/// One measured case: per-operation figures, one per sample.
#[derive(Clone, Debug)]
pub struct Sample {
    values: Vec<f64>,
}

impl Sample {
    pub fn new(mut values: Vec<f64>) -> Sample {
        assert!(!values.is_empty());
        values.sort_by(f64::total_cmp);
        Sample { values }
    }

    pub fn median(&self) -> f64 {
        percentile(&self.values, 50.0)
    }

    /// Half the distance between the 10th and 90th percentiles, relative to
    /// the median: "± this much" for most samples.
    pub fn spread(&self) -> f64 {
        let (lo, hi) = (
            percentile(&self.values, 10.0),
            percentile(&self.values, 90.0),
        );
        (hi - lo) / 2.0 / self.median().max(f64::MIN_POSITIVE)
    }
}

fn matches(name: &str, filter: &str) -> bool {
    if !name.contains('/') {
        return name.contains(filter);
    }
    let name: Vec<&str> = name.split('/').collect();
    let filter: Vec<&str> = filter.trim_matches('/').split('/').collect();
    name.windows(filter.len())
        .any(|window| window == filter.as_slice())
}

/// The `p`th percentile of sorted values, by nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

struct Row {
    name: String,
    unit: &'static str,
    median: f64,
    spread: f64,
    baseline: Option<(String, f64)>,
    /// The ratio to the baseline, when it is not simply the ratio of the
    /// medians: the median of ratios taken round by round.
    ratio: Option<f64>,
    /// Whether more is better (throughput) or worse (time).
    higher_is_better: bool,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        self.ratio
            .or_else(|| self.baseline.as_ref().map(|(_, v)| self.median / v))
    }
}

pub struct Bench {
    title: &'static str,
    filters: Vec<String>,
    json: Option<String>,
    pub quick: bool,
    rows: Vec<Row>,
}

impl Bench {
    /// Reads the command line: `--bench` (added by cargo) is ignored,
    /// `--json PATH` and `--quick` are options, anything else filters cases
    /// by name.
    pub fn from_args(title: &'static str) -> Bench {
        let mut args = std::env::args().skip(1);
        let mut filters = Vec::new();
        let mut json = None;
        let mut quick = std::env::var_os("CI").is_some();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--bench" => {}
                "--quick" => quick = true,
                "--json" => json = Some(args.next().expect("--json needs a path")),
                other if other.starts_with("--") => {}
                other => filters.push(other.to_owned()),
            }
        }
        Bench {
            title,
            filters,
            json,
            quick,
            rows: Vec::new(),
        }
    }

    /// Whether the command line selects the case `name`. Names are paths
    /// such as `sync/drain/10`; a filter selects a case when its segments
    /// appear, whole and in a row, in the name: `sync/drain/10` selects just
    /// that case, `sync` every sync case, `drain/10` the drains of 10 tasks.
    /// Names without a `/` match any part of the text.
    pub fn wants(&self, name: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| matches(name, f))
    }

    /// Whether any of `names` is selected; a group measures its baseline
    /// only then.
    pub fn wants_any<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> bool {
        names.into_iter().any(|name| self.wants(name))
    }

    /// Times `op` (which performs `per_call` operations) until one sample
    /// lasts at least `min_sample`, after a warm-up; returns ns per
    /// operation for each sample.
    pub fn time(&self, per_call: usize, mut op: impl FnMut()) -> Sample {
        let (samples, min_sample) = if self.quick {
            (7, Duration::from_millis(2))
        } else {
            (21, Duration::from_millis(5))
        };
        // Warm up, and find how many calls make a sample long enough.
        let mut calls = 1_usize;
        loop {
            let start = Instant::now();
            for _ in 0..calls {
                op();
            }
            if start.elapsed() >= min_sample || calls >= 1 << 20 {
                break;
            }
            calls *= 2;
        }
        let values = (0..samples)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..calls {
                    op();
                }
                start.elapsed().as_nanos() as f64 / (calls * per_call) as f64
            })
            .collect();
        Sample::new(values)
    }

    /// Records a time-like figure (lower is better) against its baseline.
    pub fn report(
        &mut self,
        name: &str,
        unit: &'static str,
        sample: &Sample,
        baseline: Option<(&str, &Sample)>,
    ) {
        self.push(name, unit, sample, baseline, false);
    }

    /// Records a throughput-like figure (higher is better).
    pub fn report_higher(
        &mut self,
        name: &str,
        unit: &'static str,
        sample: &Sample,
        baseline: Option<(&str, &Sample)>,
    ) {
        self.push(name, unit, sample, baseline, true);
    }

    /// Times `floor` and `case` (each performing `per_call` operations) in
    /// alternating samples, after a warm-up of each; returns ns per
    /// operation for each sample, floor first.
    pub fn time_paired(
        &self,
        per_call: usize,
        mut floor: impl FnMut(),
        mut case: impl FnMut(),
    ) -> (Vec<f64>, Vec<f64>) {
        let (samples, min_sample) = if self.quick {
            (7, Duration::from_millis(2))
        } else {
            (21, Duration::from_millis(5))
        };
        let calls = |op: &mut dyn FnMut()| {
            let mut calls = 1_usize;
            loop {
                let start = Instant::now();
                for _ in 0..calls {
                    op();
                }
                if start.elapsed() >= min_sample || calls >= 1 << 20 {
                    return calls;
                }
                calls *= 2;
            }
        };
        let (floor_calls, case_calls) = (calls(&mut floor), calls(&mut case));
        let sample = |op: &mut dyn FnMut(), calls: usize| {
            let start = Instant::now();
            for _ in 0..calls {
                op();
            }
            start.elapsed().as_nanos() as f64 / (calls * per_call) as f64
        };
        (0..samples)
            .map(|_| {
                (
                    sample(&mut floor, floor_calls),
                    sample(&mut case, case_calls),
                )
            })
            .unzip()
    }

    /// Records a time-like figure measured in samples that alternate with
    /// its baseline's: the ratio is the median of the per-pair ratios.
    pub fn report_paired(
        &mut self,
        name: &str,
        unit: &'static str,
        sample: &[f64],
        baseline: (&str, &[f64]),
    ) {
        self.push_paired(name, unit, sample, baseline, false);
    }

    /// Records a throughput-like figure measured in rounds that alternate
    /// with its baseline's: the ratio is the median of the per-round ratios,
    /// which cancels most of the drift of a shared machine.
    pub fn report_paired_higher(
        &mut self,
        name: &str,
        unit: &'static str,
        sample: &[f64],
        baseline: (&str, &[f64]),
    ) {
        self.push_paired(name, unit, sample, baseline, true);
    }

    fn push_paired(
        &mut self,
        name: &str,
        unit: &'static str,
        sample: &[f64],
        baseline: (&str, &[f64]),
        higher_is_better: bool,
    ) {
        let ratios: Vec<f64> = sample
            .iter()
            .zip(baseline.1)
            .map(|(case, base)| case / base)
            .collect();
        let ratio = Sample::new(ratios).median();
        self.push_row(Row {
            name: name.to_owned(),
            unit,
            median: Sample::new(sample.to_vec()).median(),
            spread: Sample::new(sample.to_vec()).spread(),
            baseline: Some((
                baseline.0.to_owned(),
                Sample::new(baseline.1.to_vec()).median(),
            )),
            ratio: Some(ratio),
            higher_is_better,
        });
    }

    fn push(
        &mut self,
        name: &str,
        unit: &'static str,
        sample: &Sample,
        baseline: Option<(&str, &Sample)>,
        higher_is_better: bool,
    ) {
        self.push_row(Row {
            name: name.to_owned(),
            unit,
            median: sample.median(),
            spread: sample.spread(),
            baseline: baseline.map(|(n, s)| (n.to_owned(), s.median())),
            ratio: None,
            higher_is_better,
        });
    }

    fn push_row(&mut self, row: Row) {
        eprintln!("  {}", format_row(&row));
        self.rows.push(row);
    }

    /// Prints the table and writes the JSON lines, if asked.
    pub fn finish(self) {
        println!();
        println!(
            "## {}{}",
            self.title,
            if self.quick { " (quick)" } else { "" }
        );
        println!();
        println!("| case | median | spread | baseline | ratio |");
        println!("|---|---:|---:|---|---:|");
        for row in &self.rows {
            let (baseline, ratio) = match (&row.baseline, row.ratio()) {
                (Some((name, value)), Some(ratio)) => (
                    format!("{name} ({})", fmt_value(*value, row.unit)),
                    format!("{ratio:.2}×"),
                ),
                _ => ("—".to_owned(), "1.00×".to_owned()),
            };
            println!(
                "| {} | {} | ±{:.0}% | {} | {} |",
                row.name,
                fmt_value(row.median, row.unit),
                row.spread * 100.0,
                baseline,
                ratio
            );
        }
        if let Some(path) = self.json {
            let mut out = String::new();
            for row in &self.rows {
                let (baseline_name, baseline) = match &row.baseline {
                    Some((n, v)) => (format!("\"{n}\""), format!("{v}")),
                    None => ("null".to_owned(), "null".to_owned()),
                };
                let ratio = row.ratio().map_or("null".to_owned(), |r| format!("{r}"));
                let _ = writeln!(
                    out,
                    "{{\"bench\":\"{}\",\"name\":\"{}\",\"unit\":\"{}\",\"median\":{},\"spread\":{},\"baseline_name\":{},\"baseline\":{},\"ratio\":{},\"higher_is_better\":{}}}",
                    self.title,
                    row.name,
                    row.unit,
                    row.median,
                    row.spread,
                    baseline_name,
                    baseline,
                    ratio,
                    row.higher_is_better
                );
            }
            let mut existing = std::fs::read_to_string(&path).unwrap_or_default();
            existing.push_str(&out);
            std::fs::write(&path, existing).expect("cannot write the --json file");
        }
    }
}

fn fmt_value(value: f64, unit: &str) -> String {
    if value >= 100.0 {
        format!("{value:.0} {unit}")
    } else if value >= 10.0 {
        format!("{value:.1} {unit}")
    } else {
        format!("{value:.2} {unit}")
    }
}

fn format_row(row: &Row) -> String {
    let base = match (&row.baseline, row.ratio()) {
        (Some((n, _)), Some(ratio)) => format!("  vs {n}: {ratio:.2}×"),
        _ => String::new(),
    };
    format!(
        "{:<44} {:>14} ±{:>3.0}%{base}",
        row.name,
        fmt_value(row.median, row.unit),
        row.spread * 100.0
    )
}
