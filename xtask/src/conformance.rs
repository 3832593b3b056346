//! `cargo xtask conformance expressions FILE`: runs expression test vectors against lockgate-expr.

pub fn main(_args: &[String]) -> anyhow::Result<u8> {
    anyhow::bail!("conformance is not built yet")
}
