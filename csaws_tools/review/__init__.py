"""Looking at prepared data: class statistics, overlay previews, dataset checks, exports."""
