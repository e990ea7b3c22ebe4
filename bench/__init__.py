"""The overhead benchmark: the proxies (nginx, imagegate) against a fake upstream."""
