//! Content-addressed storage for artifacts and logs (blake3 digests, files on disk).
