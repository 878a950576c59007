-- Every page view is an event too (the worker writes both rows in one transaction), so no course
-- can have more page views than events on a day. Rows returned are failures.
select course_id, activity_date, events, page_views
from {{ ref('daily_course_activity') }}
where page_views > events
