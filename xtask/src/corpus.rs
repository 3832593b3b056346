//! `cargo xtask corpus DIR`: validates and plans every entry pipeline of a corpus directory.

pub fn main(_args: &[String]) -> anyhow::Result<u8> {
    anyhow::bail!("corpus is not built yet")
}
