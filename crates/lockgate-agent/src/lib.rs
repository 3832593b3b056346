//! The agent loop: lease a job from the server, run it with lockgate-runner, stream logs and results back.
