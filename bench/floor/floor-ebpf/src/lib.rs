// A library target, so that `floor` can name this crate as a build dependency and cargo
// rebuilds the programs when it changes. The programs themselves are the binary target.
#![no_std]
