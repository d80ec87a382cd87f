"""bert_export.runtimes"""
