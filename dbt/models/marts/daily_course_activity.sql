-- Daily activity per course: every happening in the course's context, and its page views.
-- Days are calendar days in var('activity_time_zone'). A happening delivered in both formats counts once.
with events as (
    select
        happening_id,
        course_id,
        (occurred_at at time zone '{{ var("activity_time_zone") }}')::date as activity_date,
        user_id
    from {{ ref('stg_events') }}
    where course_id is not null
),

page_views as (
    select
        course_id,
        (event_time at time zone '{{ var("activity_time_zone") }}')::date as activity_date,
        user_id
    from {{ ref('stg_asset_accesses') }}
    where course_id is not null and event_time is not null
),

events_per_day as (
    select course_id, activity_date, count(distinct happening_id) as events, count(distinct user_id) as active_users
    from events
    group by 1, 2
),

page_views_per_day as (
    select course_id, activity_date, count(*) as page_views, count(distinct user_id) as page_viewers
    from page_views
    group by 1, 2
)

select
    coalesce(e.course_id, p.course_id) as course_id,
    coalesce(e.activity_date, p.activity_date) as activity_date,
    coalesce(e.events, 0) as events,
    coalesce(p.page_views, 0) as page_views,
    coalesce(e.active_users, 0) as active_users,
    coalesce(p.page_viewers, 0) as page_viewers
from events_per_day as e
full outer join page_views_per_day as p
    on p.course_id = e.course_id and p.activity_date = e.activity_date
