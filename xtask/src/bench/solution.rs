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
        let Ok(listing) = std::fs::read_dir(&folder) else { continue };
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

/// Times unpack (zip file -> folder) and pack (folder -> zip file), `ROUNDS` times each; returns medians.
fn measure(zip: &Path, work: &Path) -> anyhow::Result<(Duration, Duration, usize)> {
    let folder = work.join("unpacked");
    let out = work.join("packed.zip");
    let (mut unpack_times, mut pack_times) = (Vec::new(), Vec::new());
    let mut files = 0;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let package = SolutionPackage::read_zip(zip)?;
        let tree = lockgate_solution::unpack(&package, None)?;
        tree.write_dir(&folder)?;
        unpack_times.push(started.elapsed());
        files = tree.files.len();

        let started = Instant::now();
        let tree = SourceTree::read_dir(&folder)?;
        lockgate_solution::pack(&tree, None)?.write_zip(&out)?;
        pack_times.push(started.elapsed());
    }
    Ok((median(unpack_times), median(pack_times), files))
}

pub fn run() -> anyhow::Result<()> {
    let work = std::env::temp_dir().join(format!("lockgate-bench-solution-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    println!("solution: unpack = read zip + split + write folder; pack = read folder + merge + write zip; median of {ROUNDS}");
    println!("{:<58} {:>9} {:>7} {:>11} {:>11}", "input", "zip bytes", "files", "unpack ms", "pack ms");

    let root = std::env::args().nth(3).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/work/shared/corpus/powerplatform"));
    match largest_zip(&root) {
        Some(zip) => {
            let (unpack, pack, files) = measure(&zip, &work)?;
            let name = zip.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let size = std::fs::metadata(&zip)?.len();
            println!("{name:<58} {size:>9} {files:>7} {:>11.1} {:>11.1}", unpack.as_secs_f64() * 1e3, pack.as_secs_f64() * 1e3);
        }
        None => println!("largest fixture: no zip found under {} (pass a folder after `solution`)", root.display()),
    }

    let synthetic = work.join("Synthetic500.zip");
    sample(&SampleOptions { unique_name: "Synthetic500".into(), flows: 500, ..SampleOptions::default() }).write_zip(&synthetic)?;
    let (unpack, pack, files) = measure(&synthetic, &work)?;
    let size = std::fs::metadata(&synthetic)?.len();
    println!("{:<58} {size:>9} {files:>7} {:>11.1} {:>11.1}", "synthetic: 500 cloud flows", unpack.as_secs_f64() * 1e3, pack.as_secs_f64() * 1e3);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
