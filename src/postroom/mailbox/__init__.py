"""Maildir mailboxes (write, list, read, flag), shared by local delivery and by mail readers' protocols."""

from postroom.mailbox.maildir import Maildir, MaildirMessage, Maildirs, folder_name

__all__ = ["Maildir", "MaildirMessage", "Maildirs", "folder_name"]
