"""WSClean as the plan sees it: config values to argv, `$token$`s, the files a run writes, the `--help` check
(`options`)."""
