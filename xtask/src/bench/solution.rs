//! Benchmark of Power Platform solution unpack and pack: the largest zip of the fixture folder (the
//! argument after `solution`, else /work/shared/corpus/powerplatform) and a generated 500-flow solution,
//! each from zip file to folder on disk and back.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lockgate_solution::synthetic::{SampleOptions, sample};
use lockgate_solution::{SolutionPackage, SourceTree};

const ROUNDS: usize = 5;

fn largest_zip(root: &Path) -> Option<PathBuf> {
    let mut best: Option<(u64, PathBuf)> = None;
    let mut pending = vec![root.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let Ok(listing) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in listing.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "zip") {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                if best.as_ref().is_none_or(|(best_size, _)| size > *best_size) {
                    best = Some((size, path));
                }
            }
        }
    }
    best.map(|(_, path)| path)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Median times of the four halves of a round trip, `ROUNDS` times each.
struct Timings {
    unpack_in_memory: Duration,
    write_folder: Duration,
    read_folder: Duration,
    pack_to_zip: Duration,
    files: usize,
}

/// Unpack = read the zip and split it in memory, then replace the folder on disk; pack = read the
/// folder, then merge and write the zip.
fn measure(zip: &Path, work: &Path) -> anyhow::Result<Timings> {
    let folder = work.join("unpacked");
    let out = work.join("packed.zip");
    let mut samples: [Vec<Duration>; 4] = Default::default();
    let mut files = 0;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let package = SolutionPackage::read_zip(zip)?;
        let tree = lockgate_solution::unpack(&package, None)?;
        samples[0].push(started.elapsed());
        let started = Instant::now();
        tree.write_dir(&folder)?;
        samples[1].push(started.elapsed());
        files = tree.files.len();

        let started = Instant::now();
        let tree = SourceTree::read_dir(&folder)?;
        samples[2].push(started.elapsed());
        let started = Instant::now();
        lockgate_solution::pack(&tree, None)?.write_zip(&out)?;
        samples[3].push(started.elapsed());
    }
    let [a, b, c, d] = samples;
    Ok(Timings {
        unpack_in_memory: median(a),
        write_folder: median(b),
        read_folder: median(c),
        pack_to_zip: median(d),
        files,
    })
}

fn report(name: &str, zip: &Path, timings: &Timings) -> anyhow::Result<()> {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let size = std::fs::metadata(zip)?.len();
    println!(
        "{name:<42} {size:>9} {:>6} {:>12.1} {:>12.1} {:>12.1} {:>12.1}",
        timings.files,
        ms(timings.unpack_in_memory),
        ms(timings.write_folder),
        ms(timings.read_folder),
        ms(timings.pack_to_zip)
    );
    Ok(())
}

pub fn run() -> anyhow::Result<()> {
    let work = std::env::temp_dir().join(format!("lockgate-bench-solution-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    println!("solution: median of {ROUNDS} rounds, milliseconds");
    println!(
        "{:<42} {:>9} {:>6} {:>12} {:>12} {:>12} {:>12}",
        "input", "zip bytes", "files", "zip->memory", "write folder", "read folder", "memory->zip"
    );

    let root = std::env::args()
        .nth(3)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/corpus/powerplatform"));
    match largest_zip(&root) {
        Some(zip) => {
            let timings = measure(&zip, &work)?;
            let name = zip
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            report(&name, &zip, &timings)?;
        }
        None => println!(
            "largest fixture: no zip found under {} (pass a folder after `solution`)",
            root.display()
        ),
    }

    let synthetic = work.join("Synthetic500.zip");
    sample(&SampleOptions {
        unique_name: "Synthetic500".into(),
        flows: 500,
        ..SampleOptions::default()
    })
    .write_zip(&synthetic)?;
    let timings = measure(&synthetic, &work)?;
    report("synthetic: 500 cloud flows", &synthetic, &timings)?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
