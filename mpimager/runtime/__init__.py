"""Stage 5, one job on one rank: attempts and retries (`runner`), process supervision (`process`), where WSClean
runs (`containers`), FixMS as a transaction on the MS (`fixms`), the checks each node of a multi-node job makes
before its rank starts (`multinode`), and the run's stop requests (`interrupt`)."""
