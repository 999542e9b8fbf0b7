"""WSClean as the plan sees it: config values to argv, `$token$`s and the `--help` check (`options`), the files a
run writes and what a file name says (`names`), and what its output says as it runs (`watcher`)."""
