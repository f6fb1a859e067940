"""The triggers service: automation rules, their evaluation and executions."""
