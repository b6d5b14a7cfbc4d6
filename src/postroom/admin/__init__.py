"""HTTP: /metrics, a JSON API and the web dashboard. (Grows with the operations issue.)"""
