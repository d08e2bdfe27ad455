"""Helpers for the real-browser tests: a throwaway JupyterLab server driven by headless Chromium."""
