"""Monitoring around a deployment: the Prometheus config, alert rules (with their promtool unit
tests) and Grafana dashboards that `argus monitoring render` writes.

Pure: it builds text from data and imports only `argus.domain` and `argus.spec`. `render` owns
the files, `rules` and `rule_tests` the alerts, `dashboards` and `grafana` the dashboards, and
`names` the series they may read.
"""
