//! Template expansion: `${{ }}` expressions in keys and values, `if`/`elseif`/`else`, `each`,
//! `insert`, and template includes with typed parameters.
