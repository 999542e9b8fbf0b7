"""Stage 5, one job on one rank: attempts and retries (`runner`), process supervision (`process`), where WSClean
runs (`containers`), and FixMS as a transaction on the MS (`fixms`)."""
