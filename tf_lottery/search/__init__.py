"""LotteryTicketSearch: trials of IMP rounds with controls, evaluation and early stop."""
